// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vmx-controls (under construction).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
