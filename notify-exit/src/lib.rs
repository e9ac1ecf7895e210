// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! notify-exit (under construction).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
