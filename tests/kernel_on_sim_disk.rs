//! The kernel's scenario suite (`support/scenarios.rs`) on the engine on
//! the simulated disk, with the default (`Sync`) options, closed and
//! reopened on the same disk where a scenario says so.

waymark_tests::kernel_scenarios!(waymark_tests::scenarios::SimDiskHarness::new(11));
