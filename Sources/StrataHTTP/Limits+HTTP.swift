// The HTTP service's bounds (STYLE §5: every limit in a Limits file, with its reason).

import StrataCore

extension Limits {
    /// Request body bytes read before the connection is closed with 413: the service is
    /// read-only and uses no body, so a large one is a mistake or an attack.
    public static let httpRequestBodyBytesMax = 64 << 10
    /// Open HTTP connections; more are closed as they arrive. A dashboard holds one or two and
    /// a Prometheus server one, so 256 leaves room for many viewers while bounding what clients
    /// can make the daemon hold (each connection holds at most one response).
    public static let httpConnectionsMax = 256
}
