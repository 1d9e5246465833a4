//! tokengate's benchmark tools: what `tgload` and `firsttoken` share (connections, targets,
//! statistics). See bench/README.md.

pub mod client;
pub mod stats;
pub mod target;
