// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vcpu-events (under construction).

#![cfg_attr(not(feature = "kvm"), forbid(unsafe_code))]
#![deny(missing_docs)]
