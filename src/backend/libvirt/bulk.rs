//! `virConnectGetAllDomainStats` and `virDomainInterfaceAddresses` through the raw bindings.
//!
//! virt 0.5 wraps the first but hands back each record as a bare pointer and frees only the
//! array, leaking every record and its typed parameters (its own source marks the type "needs
//! to be implemented"). This module makes the call, copies each record's parameters into owned
//! Rust values, takes a reference on each domain, and frees the list the way libvirt documents
//! (`virDomainStatsRecordListFree`).
//!
//! virt 0.5's `Domain::interface_addresses` frees the strings and the array but never the
//! interface structs nor their address arrays (`virDomainInterfaceFree`): a few dozen bytes per
//! interface per call, which with 1,000 VMs polled every second grew the server by 150 MB an
//! hour (found by `vmdeck-soak-bench`). [`interface_addresses`] frees them as documented.
//!
//! This is the only place in vmdeck with `unsafe`.
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

/// The record list libvirt allocated, freed exactly once when dropped, also if reading it
/// panics midway.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from virConnectGetAllDomainStats and this guard is its
            // only owner, so it is freed once.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// `n` items at `ptr`, or none when `ptr` is NULL or `n` is not positive (from_raw_parts on a
/// NULL pointer is undefined behaviour even for zero items).
///
/// # Safety
/// When `ptr` is not NULL it must point at `n` initialised items that outlive the slice.
unsafe fn items<'a, T>(ptr: *const T, n: i64) -> &'a [T] {
    if ptr.is_null() || n <= 0 {
        return &[];
    }
    // SAFETY: non-NULL, and the caller vouches for `n` items.
    unsafe { std::slice::from_raw_parts(ptr, n as usize) }
}

/// A parameter's name from its fixed-size field, which libvirt NUL-terminates; a field without
/// a NUL is refused rather than read past its end.
fn field_name<const N: usize>(field: &[std::ffi::c_char; N]) -> Option<String> {
    let bytes = field.map(|c| c as u8);
    CStr::from_bytes_until_nul(&bytes).ok().map(|c| c.to_string_lossy().into_owned())
}

/// Calls `virConnectGetAllDomainStats` for every domain (active and inactive).
pub fn all_domain_stats(conn: &Connect) -> Result<Vec<(Domain, Stats)>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is a live connection for the duration of the call; `records` is an out
    // pointer that libvirt fills with a NULL-terminated array it allocates.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), GROUPS, &mut records, 0) };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let list = RecordList(records);
    // SAFETY: libvirt returned `n` record pointers at `records` (or NULL), alive until `list`
    // is dropped.
    let recs = unsafe { items(list.0.cast_const(), i64::from(n)) };
    let mut out = Vec::with_capacity(recs.len());
    for &rec in recs {
        if rec.is_null() {
            continue;
        }
        // SAFETY: a non-NULL record points at `nparams` parameters (or NULL) and a domain, all
        // alive until `list` is dropped.
        unsafe {
            let params = items((*rec).params.cast_const(), i64::from((*rec).nparams));
            let mut stats = HashMap::with_capacity(params.len());
            for p in params {
                let Some(name) = field_name(&p.field) else { continue };
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
            if !dom.is_null() && sys::virDomainRef(dom) == 0 {
                out.push((Domain::from_ptr(dom), Stats(stats)));
            }
        }
    }
    drop(list);
    Ok(out)
}

/// One interface's addresses: its MAC (when libvirt knows it) and (address, prefix) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddrs {
    pub hwaddr: Option<String>,
    pub addrs: Vec<(String, u32)>,
}

/// The interface array libvirt allocated: each interface freed with `virDomainInterfaceFree`
/// and the array with `free`, exactly once when dropped, also if reading it panics midway.
struct InterfaceList {
    ptr: *mut sys::virDomainInterfacePtr,
    len: usize,
}

impl Drop for InterfaceList {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        for i in 0..self.len {
            // SAFETY: `ptr` holds `len` entries written by virDomainInterfaceAddresses; each
            // non-null one is freed here only, once.
            unsafe {
                let iface = *self.ptr.add(i);
                if !iface.is_null() {
                    sys::virDomainInterfaceFree(iface);
                }
            }
        }
        // SAFETY: the array was allocated by libvirt with malloc and is freed once.
        unsafe { libc::free(self.ptr.cast()) };
    }
}

/// A C string libvirt owns, copied; None when null or not NUL-terminated within reason.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that stays valid during the call.
unsafe fn copy_c_str(p: *const std::ffi::c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    Some(CStr::from_ptr(p).to_string_lossy().into_owned())
}

/// Calls `virDomainInterfaceAddresses` with `source` (agent, lease or ARP).
pub fn interface_addresses(
    dom: &Domain,
    source: u32,
) -> Result<Vec<InterfaceAddrs>, virt::error::Error> {
    let mut ptr: *mut sys::virDomainInterfacePtr = std::ptr::null_mut();
    // SAFETY: `dom` is a live domain; libvirt writes an array it allocated into `ptr`.
    let n = unsafe { sys::virDomainInterfaceAddresses(dom.as_ptr(), &mut ptr, source, 0) };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let list = InterfaceList { ptr, len: n as usize };
    if list.ptr.is_null() || list.len == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(list.len);
    for i in 0..list.len {
        // SAFETY: index within the `n` entries libvirt wrote; each entry and its `addrs`
        // array of `naddrs` entries are valid until `list` is dropped.
        unsafe {
            let iface = *list.ptr.add(i);
            if iface.is_null() {
                continue;
            }
            let iface = &*iface;
            let mut addrs = Vec::new();
            if !iface.addrs.is_null() {
                for j in 0..iface.naddrs as usize {
                    let a = &*iface.addrs.add(j);
                    if let Some(addr) = copy_c_str(a.addr) {
                        addrs.push((addr, a.prefix));
                    }
                }
            }
            out.push(InterfaceAddrs { hwaddr: copy_c_str(iface.hwaddr), addrs });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_or_empty_arrays_read_as_nothing() {
        // SAFETY: NULL pointers are never dereferenced by `items`.
        let none: &[u64] = unsafe { items(std::ptr::null(), 5) };
        assert!(none.is_empty());
        let v = [1u64, 2, 3];
        // SAFETY: `v` holds three items and outlives the slices.
        assert_eq!(unsafe { items(v.as_ptr(), 3) }, &v[..]);
        assert!(unsafe { items(v.as_ptr(), -1) }.is_empty());
    }

    #[test]
    fn field_names_stop_at_the_nul_and_a_field_without_one_is_refused() {
        let mut field = [0 as std::ffi::c_char; 8];
        for (i, b) in b"cpu.time".iter().take(7).enumerate() {
            field[i] = *b as std::ffi::c_char;
        }
        assert_eq!(field_name(&field).as_deref(), Some("cpu.tim"));
        let full = [b'x' as std::ffi::c_char; 8];
        assert_eq!(field_name(&full), None, "no NUL: not read past the field");
    }
}
