// What the HTTP service shows, given by the daemon (StrataServer's `DaemonHTTPContent`): the
// metrics page and the API's JSON. The HTTP module knows HTTP; the daemon knows the pool, the
// connections and the jobs, and encodes the API's objects with the CLI's `--json` encoder, so
// there is one encoding of each object.

import StrataCore

/// The data behind /metrics and /api/v1. Its methods may block (they read the pool under its
/// locks): the handler calls them on the thread pool, never on an event loop.
public protocol HTTPContentSource: Sendable {
    /// The Prometheus text exposition of every metric now.
    func metricsText() -> [UInt8]

    /// One API resource as JSON.
    /// - Throws: the engine's error (`.notFound` for a volume that does not exist).
    func json(for resource: APIResource) throws(StrataError) -> [UInt8]
}

extension HTTPContentSource {
    /// The response for a data route.
    func response(for route: HTTPRoute) -> HTTPResponse {
        switch route {
        case .dashboard(let asset):
            return .ok(asset.body, contentType: asset.contentType)
        case .metrics:
            // The Prometheus text format, version 0.0.4 (what every scraper reads).
            return .ok(self.metricsText(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case .api(let resource):
            do throws(StrataError) {
                return .ok(try self.json(for: resource), contentType: "application/json")
            } catch {
                return .error(error)
            }
        }
    }
}
