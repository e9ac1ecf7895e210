// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod action;
pub mod apply;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod exit;
pub mod guests;
pub mod handlers;
pub mod heki_probe;
pub mod host;
pub mod hostile;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run_loop;
pub mod snapshot;
pub mod stop;
pub mod timer;
pub mod trace;
pub mod vmm;
pub mod watchdog;
