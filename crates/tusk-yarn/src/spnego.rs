//! HTTP Negotiate (SPNEGO, RFC 4559) with the user's Kerberos ticket cache, for a
//! ResourceManager whose web services require Kerberos (`hadoop.http.authentication.type =
//! kerberos`).
//!
//! The client side of SPNEGO is one call into GSSAPI: `gss_init_sec_context` for the service
//! `HTTP@<host>` with the SPNEGO mechanism gives the token that goes into `Authorization:
//! Negotiate <base64>`. Credentials come from the ticket cache exactly as for `kinit`/`klist`
//! and for the HDFS client (hdfs-native): `KRB5CCNAME`, else the default cache; `KRB5_CONFIG`
//! names the krb5.conf. Mutual authentication is not asked for: the ResourceManager's answer
//! is trusted as any plain-HTTP answer is.
//!
//! MIT Kerberos' `libgssapi_krb5.so.2` is loaded at run time, the first time a server asks for
//! Negotiate, so tusk builds without Kerberos headers and runs without the library on
//! unsecured clusters. The bindings below declare only the six functions used, with the
//! types of RFC 2744 (the GSSAPI C binding) as MIT's `gssapi.h` lays them out on Unix.
//! Every call is in a small `unsafe` block; the library stays loaded for the life of the
//! process (unloading Kerberos libraries is not safe).

// The workspace forbids unsafe code; this crate denies it, and this module alone allows it.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use base64::Engine as _;

/// The library loaded (the SONAME of MIT Kerberos' GSSAPI on Linux).
pub const LIBRARY: &str = "libgssapi_krb5.so.2";

/// `OM_uint32`.
type Om = u32;

/// `gss_OID_desc`: `{ OM_uint32 length; void *elements; }`.
#[repr(C)]
struct OidDesc {
    length: Om,
    elements: *const c_void,
}

/// An OID that lives as long as the process.
struct StaticOid(OidDesc);

// SAFETY: the descriptor points at immutable `'static` bytes; GSSAPI only reads OIDs it is
// given (it copies the ones it keeps), so sharing one between threads is sharing a constant.
unsafe impl Sync for StaticOid {}

/// `GSS_C_NT_HOSTBASED_SERVICE`, 1.2.840.113554.1.2.1.4 ("service@host" names). GSSAPI compares
/// OIDs by value, so our own copy does instead of the library's exported variable.
static NT_HOSTBASED_SERVICE: StaticOid = StaticOid(OidDesc {
    length: 10,
    elements: b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04".as_ptr().cast(),
});

/// The SPNEGO mechanism, 1.3.6.1.5.5.2.
static SPNEGO_MECH: StaticOid = StaticOid(OidDesc {
    length: 6,
    elements: b"\x2b\x06\x01\x05\x05\x02".as_ptr().cast(),
});

/// `gss_buffer_desc`: `{ size_t length; void *value; }`.
#[repr(C)]
struct Buffer {
    length: usize,
    value: *mut c_void,
}

impl Buffer {
    fn empty() -> Buffer {
        Buffer {
            length: 0,
            value: ptr::null_mut(),
        }
    }
}

/// `gss_name_t`, `gss_ctx_id_t`, `gss_cred_id_t`, `gss_channel_bindings_t`: opaque pointers.
type Handle = *mut c_void;

/// Calling and routine errors (`GSS_ERROR()`); the low 16 bits are supplementary information.
const GSS_ERROR_MASK: Om = 0xffff_0000;
/// The routine error "no credentials" (`GSS_S_NO_CRED`): no usable ticket in the cache.
const GSS_S_NO_CRED: Om = 7 << 16;
/// The routine error "unspecified failure, see the minor status" (`GSS_S_FAILURE`).
const GSS_S_FAILURE: Om = 13 << 16;
const GSS_ROUTINE_ERROR_MASK: Om = 0x00ff_0000;
/// `gss_display_status` status types.
const GSS_C_GSS_CODE: c_int = 1;
const GSS_C_MECH_CODE: c_int = 2;

type ImportName = unsafe extern "C" fn(*mut Om, *mut Buffer, *const OidDesc, *mut Handle) -> Om;
type InitSecContext = unsafe extern "C" fn(
    *mut Om,          // minor_status
    Handle,           // claimant_cred_handle (GSS_C_NO_CREDENTIAL: the default, from the cache)
    *mut Handle,      // context_handle
    Handle,           // target_name
    *const OidDesc,   // mech_type
    Om,               // req_flags
    Om,               // time_req
    Handle,           // input_chan_bindings
    *mut Buffer,      // input_token
    *mut *mut c_void, // actual_mech_type
    *mut Buffer,      // output_token
    *mut Om,          // ret_flags
    *mut Om,          // time_rec
) -> Om;
type ReleaseBuffer = unsafe extern "C" fn(*mut Om, *mut Buffer) -> Om;
type ReleaseName = unsafe extern "C" fn(*mut Om, *mut Handle) -> Om;
type DeleteSecContext = unsafe extern "C" fn(*mut Om, *mut Handle, *mut Buffer) -> Om;
type DisplayStatus =
    unsafe extern "C" fn(*mut Om, Om, c_int, *const OidDesc, *mut Om, *mut Buffer) -> Om;

/// The loaded library and the functions used.
struct Gss {
    import_name: ImportName,
    init_sec_context: InitSecContext,
    release_buffer: ReleaseBuffer,
    release_name: ReleaseName,
    delete_sec_context: DeleteSecContext,
    display_status: DisplayStatus,
    /// Kept so that the function pointers above stay valid (it is never dropped: static).
    _lib: libloading::Library,
}

static GSS: OnceLock<Result<Gss, String>> = OnceLock::new();

/// Where the ticket comes from and how to get one: part of every failure.
fn kinit_hint() -> String {
    let cache = match std::env::var("KRB5CCNAME") {
        Ok(c) if !c.is_empty() => format!("here {c}"),
        _ => "unset here, so the default cache".to_string(),
    };
    format!(
        "run `kinit` to get a ticket: tusk reads the ticket cache named by KRB5CCNAME ({cache})"
    )
}

fn load() -> Result<Gss, String> {
    // SAFETY: loading runs the library's initialisers; this is the system's MIT Kerberos
    // GSSAPI library, whose initialisers only set up its own state.
    let lib = unsafe { libloading::Library::new(LIBRARY) }.map_err(|e| {
        format!(
            "cannot load MIT Kerberos' GSSAPI library {LIBRARY} ({e}; Debian/Ubuntu: apt-get install libgssapi-krb5-2, RHEL: krb5-libs); then {}",
            kinit_hint()
        )
    })?;
    fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
        // SAFETY: every `T` this is called with is the function pointer type of `name` as
        // RFC 2744 / MIT's gssapi.h declare it (see the type aliases above); the pointer is
        // used only while `lib` is loaded, and it stays loaded for the life of the process.
        unsafe { lib.get::<T>(name) }
            .map(|s| *s)
            .map_err(|e| format!("{LIBRARY} has no {name}: {e}"))
    }
    Ok(Gss {
        import_name: sym(&lib, "gss_import_name")?,
        init_sec_context: sym(&lib, "gss_init_sec_context")?,
        release_buffer: sym(&lib, "gss_release_buffer")?,
        release_name: sym(&lib, "gss_release_name")?,
        delete_sec_context: sym(&lib, "gss_delete_sec_context")?,
        display_status: sym(&lib, "gss_display_status")?,
        _lib: lib,
    })
}

fn gss() -> Result<&'static Gss, String> {
    GSS.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Whether the GSSAPI library has been loaded (it is only loaded when a server asks for
/// Negotiate).
pub fn loaded() -> bool {
    GSS.get().is_some_and(|g| g.is_ok())
}

impl Gss {
    /// The bytes of a buffer the library handed out, released afterwards.
    fn take(&self, buf: &mut Buffer) -> Vec<u8> {
        let bytes = if buf.value.is_null() || buf.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library filled `buf` with `length` readable bytes at `value`, which
            // stay valid until the gss_release_buffer below.
            unsafe { std::slice::from_raw_parts(buf.value.cast::<u8>(), buf.length) }.to_vec()
        };
        let mut minor = 0;
        // SAFETY: `buf` was allocated by the library (or is empty), released exactly once.
        unsafe { (self.release_buffer)(&mut minor, buf) };
        bytes
    }

    /// What GSSAPI says about a failure: the GSS message, then the mechanism's (e.g. "No
    /// Kerberos credentials available (default cache: FILE:/tmp/krb5cc_0)").
    fn describe(&self, major: Om, minor: Om) -> String {
        let mut parts = Vec::new();
        // GSS_C_NO_OID as the mechanism: the library knows which mechanism set a minor code.
        for (code, kind) in [(major, GSS_C_GSS_CODE), (minor, GSS_C_MECH_CODE)] {
            // GSS_S_FAILURE's text only says to read the mechanism's ("Unspecified GSS
            // failure. Minor code may provide more information").
            if code == 0
                || (kind == GSS_C_GSS_CODE
                    && code & GSS_ROUTINE_ERROR_MASK == GSS_S_FAILURE
                    && minor != 0)
            {
                continue;
            }
            let mut context: Om = 0;
            // A status may read as several messages; the library says when it is done.
            for _ in 0..8 {
                let mut m = 0;
                let mut text = Buffer::empty();
                // SAFETY: every pointer is to a live local or null (GSS_C_NO_OID); `text` is
                // filled by the library and released by `take`.
                let st = unsafe {
                    (self.display_status)(&mut m, code, kind, ptr::null(), &mut context, &mut text)
                };
                let msg = self.take(&mut text);
                if st & GSS_ERROR_MASK != 0 {
                    break;
                }
                // Some messages carry their C string's NUL in the length.
                let msg = String::from_utf8_lossy(&msg)
                    .split(|c: char| c.is_whitespace() || c == '\0')
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if !msg.is_empty() && !parts.contains(&msg) {
                    parts.push(msg);
                }
                if context == 0 {
                    break;
                }
            }
        }
        if parts.is_empty() {
            format!("GSSAPI major status {major:#x}, minor {minor}")
        } else {
            parts.join(": ")
        }
    }
}

/// The value of an `Authorization` header for `host`'s web server: `Negotiate <base64 token>`,
/// from the first SPNEGO token for the service `HTTP@host`. The error says what GSSAPI said
/// and how to get a ticket (`kinit`, `KRB5CCNAME`).
pub fn authorization(host: &str) -> Result<String, String> {
    let g = gss()?;
    let service = format!("HTTP@{host}");

    let mut minor: Om = 0;
    let mut name: Handle = ptr::null_mut();
    let mut input = Buffer {
        length: service.len(),
        value: service.as_ptr().cast_mut().cast(),
    };
    // SAFETY: `input` points at `service`'s bytes (alive for the call; gss_import_name only
    // reads them and copies what it keeps), the OID is static, `name` is written on success.
    let major =
        unsafe { (g.import_name)(&mut minor, &mut input, &NT_HOSTBASED_SERVICE.0, &mut name) };
    if major & GSS_ERROR_MASK != 0 {
        return Err(format!(
            "GSSAPI cannot name the service {service}: {}",
            g.describe(major, minor)
        ));
    }

    let mut ctx: Handle = ptr::null_mut();
    let mut token = Buffer::empty();
    // SAFETY: `name` is the live name imported above; null is GSS_C_NO_CREDENTIAL (the
    // default credentials, from the ticket cache), GSS_C_NO_CHANNEL_BINDINGS and
    // GSS_C_NO_BUFFER (the first call has no input token); the optional outputs are null;
    // `ctx` and `token` are written by the library and released below.
    let major = unsafe {
        (g.init_sec_context)(
            &mut minor,
            ptr::null_mut(),
            &mut ctx,
            name,
            &SPNEGO_MECH.0,
            0, // no flags: mutual authentication, delegation etc. are not asked for
            0,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut token,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    let bytes = g.take(&mut token);
    let mut m = 0;
    if !ctx.is_null() {
        // SAFETY: `ctx` is the context the library created; deleted once, no output token.
        unsafe { (g.delete_sec_context)(&mut m, &mut ctx, ptr::null_mut()) };
    }
    // SAFETY: `name` was imported above and is released once.
    unsafe { (g.release_name)(&mut m, &mut name) };

    // COMPLETE or CONTINUE_NEEDED (the server's answer would finish the exchange; without
    // mutual authentication it need not be read) both give the token to send.
    if major & GSS_ERROR_MASK != 0 {
        let what = if major & GSS_ROUTINE_ERROR_MASK == GSS_S_NO_CRED {
            "no Kerberos ticket"
        } else {
            "GSSAPI cannot make a token"
        };
        return Err(format!(
            "{what} for {service} ({}); {}",
            g.describe(major, minor),
            kinit_hint()
        ));
    }
    if bytes.is_empty() {
        return Err(format!(
            "GSSAPI gave an empty SPNEGO token for {service}; {}",
            kinit_hint()
        ));
    }
    Ok(format!(
        "Negotiate {}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The `hadoop.auth` cookie (hadoop-auth's signed token, set once a SPNEGO token was
/// accepted) in a `Set-Cookie` value: `Some(Some("hadoop.auth=…"))` to keep, `Some(None)` when
/// the server clears it (an empty value), `None` for other cookies.
pub fn hadoop_auth_cookie(set_cookie: &str) -> Option<Option<String>> {
    let pair = set_cookie.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    if name.trim() != "hadoop.auth" {
        return None;
    }
    let v = value.trim();
    Some((!v.is_empty() && v != "\"\"").then(|| format!("hadoop.auth={v}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hadoop_auth_cookie_is_kept_and_cleared() {
        assert_eq!(
            super::hadoop_auth_cookie(
                r#"hadoop.auth="u=tusk&p=tusk@EXAMPLE.COM&t=kerberos&e=1&s=x="; Path=/; HttpOnly"#
            ),
            Some(Some(
                r#"hadoop.auth="u=tusk&p=tusk@EXAMPLE.COM&t=kerberos&e=1&s=x=""#.to_string()
            ))
        );
        assert_eq!(
            super::hadoop_auth_cookie("hadoop.auth=; Path=/; HttpOnly"),
            Some(None)
        );
        assert_eq!(super::hadoop_auth_cookie("JSESSIONID=abc; Path=/"), None);
    }
}
