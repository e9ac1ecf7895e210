// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Rate-limited logging: the limiter is [`x86_kvm_base::ratelimit::RateLimit`] (one
//! limiter, one time type, for every crate of the workspace; after Linux
//! `lib/ratelimit.c` `___ratelimit()`), re-exported here so a VMM that takes notify-exit
//! alone can build [`HandlerOptions`](crate::HandlerOptions) without naming the
//! foundation crate.
//!
//! Time is a [`Duration`](core::time::Duration) since an origin the caller picks, the
//! same value the VMM passes to [`NotifyHandler::handle`](crate::NotifyHandler::handle).

#![forbid(unsafe_code)]

pub use x86_kvm_base::ratelimit::{LogPermit, RateLimit};
