//! The kernel's scenario suite (`support/scenarios.rs`) on
//! `Kernel::in_memory()`, the test double users' suites open: the same
//! behaviour as on disk (its "reopen" keeps the kernel open).

waymark_tests::kernel_scenarios!(waymark_tests::scenarios::InMemoryHarness::new());
