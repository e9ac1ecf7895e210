// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reading capability MSRs from the running host through `/dev/cpu/N/msr` (the Linux
//! `msr` driver; needs root or CAP_SYS_RAWIO), after checking that the CPU has VMX.
//!
//! Plain file reads at offset = MSR index: no `unsafe`, no ioctl. The MSRs whose
//! existence depends on other capability bits are only read when the condition holds,
//! in the order of SDM Appendix A.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::dump::Dump;
use crate::error::CapsError;
use crate::msr;
use crate::raw::RawMsrs;

/// What `/proc/cpuinfo` says about one logical CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `vendor_id`.
    pub vendor: String,
    /// `model name`.
    pub model_name: String,
    /// Whether the `flags` line has `vmx`.
    pub vmx: bool,
}

/// Finds logical CPU `cpu` in `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str, cpu: u32) -> Option<CpuInfo> {
    for block in text.split("\n\n") {
        let mut info = CpuInfo::default();
        let mut this = None;
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "processor" => this = v.parse::<u32>().ok(),
                "vendor_id" => info.vendor = v.to_string(),
                "model name" => info.model_name = v.to_string(),
                "flags" => info.vmx = v.split_ascii_whitespace().any(|f| f == "vmx"),
                _ => {}
            }
        }
        if this == Some(cpu) {
            return Some(info);
        }
    }
    None
}

/// Fails with [`CapsError::NoVmx`] unless `info` describes an Intel-compatible CPU with
/// VMX.
pub fn require_vmx(info: &CpuInfo) -> Result<(), CapsError> {
    if matches!(info.vendor.as_str(), "AuthenticAMD" | "HygonGenuine") {
        return Err(CapsError::NoVmx {
            detail: format!(
                "this is an {} CPU (AMD SVM): the VMX capability MSRs do not exist",
                info.vendor
            ),
        });
    }
    if !info.vmx {
        return Err(CapsError::NoVmx {
            detail: "this CPU has no VMX (CPUID.1:ECX.VMX = 0, or disabled by firmware: no \"vmx\" in /proc/cpuinfo flags)".into(),
        });
    }
    Ok(())
}

/// Reads every capability MSR that exists, using `read(index)`, which returns
/// `Ok(None)` for an MSR the CPU does not implement. Required MSRs that do not read
/// give [`CapsError::MissingMsr`].
pub fn collect(
    mut read: impl FnMut(u32) -> Result<Option<u64>, CapsError>,
) -> Result<RawMsrs, CapsError> {
    let mut raw = RawMsrs::new();
    for index in msr::REQUIRED {
        match read(index)? {
            Some(v) => raw.insert(index, v),
            None => {
                return Err(CapsError::MissingMsr {
                    index,
                    name: msr::name(index).unwrap_or("?"),
                })
            }
        };
    }
    let hi = |raw: &RawMsrs, i: u32| raw.get(i).map_or(0, |v| v >> 32);
    let mut maybe = |raw: &mut RawMsrs, index: u32, cond: bool| -> Result<(), CapsError> {
        if cond {
            if let Some(v) = read(index)? {
                raw.insert(index, v);
            }
        }
        Ok(())
    };
    let basic = raw.get(msr::IA32_VMX_BASIC).unwrap_or(0);
    if basic & crate::basic::VMX_BASIC_TRUE_CTLS != 0 {
        for i in msr::IA32_VMX_TRUE_PINBASED_CTLS..=msr::IA32_VMX_TRUE_ENTRY_CTLS {
            maybe(&mut raw, i, true)?;
        }
    }
    let primary_hi = hi(&raw, msr::IA32_VMX_PROCBASED_CTLS);
    maybe(
        &mut raw,
        msr::IA32_VMX_PROCBASED_CTLS2,
        primary_hi & (1 << 31) != 0,
    )?;
    let sec_hi = hi(&raw, msr::IA32_VMX_PROCBASED_CTLS2);
    maybe(
        &mut raw,
        msr::IA32_VMX_EPT_VPID_CAP,
        sec_hi & ((1 << 1) | (1 << 5)) != 0,
    )?;
    maybe(&mut raw, msr::IA32_VMX_VMFUNC, sec_hi & (1 << 13) != 0)?;
    maybe(
        &mut raw,
        msr::IA32_VMX_PROCBASED_CTLS3,
        primary_hi & (1 << 17) != 0,
    )?;
    let exit_hi = hi(&raw, msr::IA32_VMX_EXIT_CTLS);
    maybe(&mut raw, msr::IA32_VMX_EXIT_CTLS2, exit_hi & (1 << 31) != 0)?;
    Ok(raw)
}

/// Reads logical CPU `cpu`'s capability MSRs from `/dev/cpu/<cpu>/msr`, after checking
/// `/proc/cpuinfo` for VMX.
pub fn read_host(cpu: u32) -> Result<Dump, CapsError> {
    read_host_from(Path::new("/proc/cpuinfo"), Path::new("/dev/cpu"), cpu)
}

/// [`read_host`] with the cpuinfo file and the `/dev/cpu` directory given (for tests
/// and chroots).
///
/// ```
/// use std::path::Path;
/// use vmx_caps::source::read_host_from;
/// use vmx_caps::CapsError;
///
/// // An AMD host's /proc/cpuinfo: the VMX MSRs do not exist, and the error says so.
/// let cpuinfo = std::env::temp_dir().join(format!("vmx-caps-doc-cpuinfo-{}", std::process::id()));
/// std::fs::write(&cpuinfo, "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu svm\n\n")?;
/// let e = read_host_from(&cpuinfo, Path::new("/dev/cpu"), 0).unwrap_err();
/// std::fs::remove_file(&cpuinfo)?;
/// assert!(matches!(e, CapsError::NoVmx { .. }));
/// assert!(e.to_string().contains("AMD SVM"), "{e}");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_host_from(cpuinfo: &Path, dev_cpu: &Path, cpu: u32) -> Result<Dump, CapsError> {
    let text = std::fs::read_to_string(cpuinfo)
        .map_err(|e| CapsError::io(cpuinfo.display().to_string(), e))?;
    let info = parse_cpuinfo(&text, cpu).ok_or_else(|| CapsError::Unavailable {
        detail: format!("CPU {cpu} is not listed in {}", cpuinfo.display()),
    })?;
    require_vmx(&info)?;
    let path: PathBuf = dev_cpu.join(cpu.to_string()).join("msr");
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => CapsError::Unavailable {
            detail: format!("{shown} not present (load the msr module: modprobe msr)"),
        },
        ErrorKind::PermissionDenied => CapsError::Unavailable {
            detail: format!("{shown}: permission denied (needs root or CAP_SYS_RAWIO)"),
        },
        _ => CapsError::io(&shown, e),
    })?;
    let raw = collect(|index| {
        let mut buf = [0u8; 8];
        match file.read_exact_at(&mut buf, u64::from(index)) {
            Ok(()) => Ok(Some(u64::from_ne_bytes(buf))),
            // The msr driver returns EIO for an MSR the CPU does not implement.
            Err(e) if e.raw_os_error() == Some(5) => Ok(None),
            Err(e) => Err(CapsError::io(format!("{shown} @ {index:#x}"), e)),
        }
    })?;
    Ok(Dump::new(info.model_name, format!("host {shown}"), raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: fpu vme vmx sse\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: fpu sse\n\n";

    #[test]
    fn cpuinfo_parsing() {
        let c0 = parse_cpuinfo(CPUINFO, 0).unwrap();
        assert!(c0.vmx);
        assert_eq!(c0.model_name, "Test CPU");
        let c1 = parse_cpuinfo(CPUINFO, 1).unwrap();
        assert!(!c1.vmx);
        assert!(parse_cpuinfo(CPUINFO, 2).is_none());
        assert!(require_vmx(&c0).is_ok());
        let e = require_vmx(&c1).unwrap_err();
        assert!(e.to_string().contains("this CPU has no VMX"), "{e}");
        let amd = CpuInfo {
            vendor: "AuthenticAMD".into(),
            ..Default::default()
        };
        assert!(matches!(require_vmx(&amd), Err(CapsError::NoVmx { .. })));
    }

    #[test]
    fn collect_follows_existence_conditions() {
        // Penryn: no TRUE MSRs, secondary controls without EPT/VPID.
        let penryn = crate::caps::tests::penryn();
        let mut asked = Vec::new();
        let got = collect(|i| {
            asked.push(i);
            // A CPU that would answer every index: only the right ones are asked.
            Ok(Some(penryn.get(i).unwrap_or(0xDEAD)))
        })
        .unwrap();
        assert_eq!(got, penryn);
        assert_eq!(asked, (0x480..=0x48B).collect::<Vec<_>>());
    }

    #[test]
    fn collect_missing_required_is_typed() {
        let e = collect(|i| Ok(if i == 0x485 { None } else { Some(0) })).unwrap_err();
        assert!(matches!(e, CapsError::MissingMsr { index: 0x485, .. }));
    }

    #[test]
    fn host_without_vmx_fails_clearly() {
        let dir = std::env::temp_dir().join(format!("vmx-caps-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let info = dir.join("cpuinfo");
        std::fs::write(&info, CPUINFO).unwrap();
        let e = read_host_from(&info, &dir, 1).unwrap_err();
        assert!(matches!(e, CapsError::NoVmx { .. }), "{e}");
        // CPU 0 has VMX but there is no msr device under `dir`.
        let e = read_host_from(&info, &dir, 0).unwrap_err();
        assert!(e.to_string().contains("not present"), "{e}");
        let e = read_host_from(&info, &dir, 7).unwrap_err();
        assert!(matches!(e, CapsError::Unavailable { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_host_on_this_machine_never_panics() {
        // Whatever the machine, the result is a dump or a typed error.
        match read_host(0) {
            Ok(d) => assert!(d.msrs.contains(0x480)),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
