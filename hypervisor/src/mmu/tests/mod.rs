//! Host tests of the MMU core: the independent reference walker (oracle),
//! the simulated hardware harness, table-driven tests, named regression
//! tests, the read-only hardware walk and the property test over random event sequences.

mod harness;
mod inspect;
mod mechanics;
mod prop;
mod refwalk;
mod regress;
mod smp;
mod tables;
