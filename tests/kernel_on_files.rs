//! The kernel's scenario suite (`support/scenarios.rs`) on the engine on a
//! state directory on the real disk, closed and reopened where a scenario
//! says so.

waymark_tests::kernel_scenarios!(waymark_tests::scenarios::FileHarness::new());
