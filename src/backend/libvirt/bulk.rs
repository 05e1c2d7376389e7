//! `virConnectGetAllDomainStats` through the raw bindings.
//!
//! virt 0.5 wraps this call but hands back each record as a bare pointer and frees only the array,
//! leaking every record and its typed parameters (its own source marks the type "needs to be
//! implemented"). This module makes the call, copies each record's parameters into owned Rust
//! values, takes a reference on each domain, and frees the list the way libvirt documents
//! (`virDomainStatsRecordListFree`). It is the only place in vmdeck with `unsafe`.
#![allow(unsafe_code)] // FFI: reading libvirt-owned structs; each block states its invariant.

use std::collections::HashMap;
use std::ffi::CStr;

use virt::connect::Connect;
use virt::domain::Domain;
use virt_sys as sys;

/// One typed parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

/// The parameters of one domain's record, by name (`state.state`, `block.0.capacity`...).
#[derive(Debug, Default, Clone)]
pub struct Stats(pub HashMap<String, Param>);

impl Stats {
    pub fn u64(&self, key: &str) -> Option<u64> {
        match self.0.get(key)? {
            Param::UInt(v) => Some(*v),
            Param::Int(v) => u64::try_from(*v).ok(),
            Param::Double(v) if *v >= 0.0 => Some(*v as u64),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            Param::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Stat groups vmdeck asks for. Drivers silently leave out groups they do not support
/// (the test driver returns `state` only) because ENFORCE_STATS is not passed.
pub const GROUPS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// Calls `virConnectGetAllDomainStats` for every domain (active and inactive).
pub fn all_domain_stats(conn: &Connect) -> Result<Vec<(Domain, Stats)>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is a live connection for the duration of the call; `records` is an out
    // pointer that libvirt fills with a NULL-terminated array it allocates.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), GROUPS, &mut records, 0) };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` valid record pointers; each record points at `nparams`
        // parameters and a domain, all alive until the list is freed below.
        unsafe {
            let rec = *records.add(i);
            let params = std::slice::from_raw_parts((*rec).params, (*rec).nparams.max(0) as usize);
            let mut stats = HashMap::with_capacity(params.len());
            for p in params {
                let name = CStr::from_ptr(p.field.as_ptr()).to_string_lossy().into_owned();
                let value = match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => Param::Int(p.value.i as i64),
                    sys::VIR_TYPED_PARAM_UINT => Param::UInt(p.value.ui as u64),
                    sys::VIR_TYPED_PARAM_LLONG => Param::Int(p.value.l),
                    sys::VIR_TYPED_PARAM_ULLONG => Param::UInt(p.value.ul),
                    sys::VIR_TYPED_PARAM_DOUBLE => Param::Double(p.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => Param::Bool(p.value.b != 0),
                    sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                        Param::Str(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                    }
                    _ => continue,
                };
                stats.insert(name, value);
            }
            // The list owns one reference to each domain; take our own before freeing it.
            let dom = (*rec).dom;
            if sys::virDomainRef(dom) == 0 {
                out.push((Domain::from_ptr(dom), Stats(stats)));
            }
        }
    }
    // SAFETY: `records` came from virConnectGetAllDomainStats and is freed exactly once.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}
