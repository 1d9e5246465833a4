//! The shared test harness: `app` (`spawn_app()`, an in-process server with a manual clock),
//! `process` (the real `tokengate` binary: homes, CLI runs, `serve` child processes),
//! `postgres` (a database of its own per test, and nodes on it) and `browser` (headless
//! Chromium through WebDriver, and a loopback redirect target).

#![allow(dead_code)] // not every test module uses every helper

mod app;
mod audit_trail;
pub mod browser;
pub mod postgres;
pub mod process;

pub use app::*;
pub use audit_trail::*;
pub use postgres::*;
