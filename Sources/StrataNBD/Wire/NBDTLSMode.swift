// How a server treats TLS, in the words of proto.md "TLS support" / "Server-side requirements".
//
// `off` is NOTLS: NBD_OPT_STARTTLS is refused (NBD_REP_ERR_POLICY, since the server could do TLS
// but is configured not to), and no option is ever answered NBD_REP_ERR_TLS_REQD. `on` is
// SELECTIVETLS with no TLS-only export: a client may upgrade with STARTTLS or stay in clear
// text, and every export works either way. `require` is FORCEDTLS: before STARTTLS, every
// option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, and EXPORT_NAME, which has no error
// reply, closes the connection; no export is reachable without TLS.

/// Whether a server offers TLS, and whether it insists on it.
public enum NBDTLSMode: String, Sendable, CaseIterable, Equatable {
    /// proto.md NOTLS: no TLS; STARTTLS is refused by policy.
    case off
    /// proto.md SELECTIVETLS (no TLS-only exports): TLS when the client asks for it.
    case on
    /// proto.md FORCEDTLS: nothing but STARTTLS and ABORT until TLS is running.
    case require
}
