//! How the owner controls the agent: buttons (and an LED) on the GPIO header,
//! and a local control socket for `broadcast-agent status|open|close`.
//! Both send the same commands to the reconciler.

pub mod gpio;
pub mod socket;
