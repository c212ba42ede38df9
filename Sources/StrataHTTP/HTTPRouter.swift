// The HTTP service's routing, as a pure function of the request head: which resource a GET or
// HEAD names, or the response that refuses it. No I/O and no state, so it is tested without
// sockets (HTTPRouterTests) and the NIO handler only carries out its decision.
//
// Rules, in order (RFC 9110 §15.5.6 for 405, RFC 6750 §3 for 401):
//   1. Only GET and HEAD: anything else is 405 with `Allow: GET, HEAD`. The service is read-only.
//   2. The dashboard's files (/, /dashboard.css, /dashboard.js) need no token: they hold no data,
//      and the page asks for the token when the API answers 401.
//   3. With a token configured, /metrics and /api/v1/… need `Authorization: Bearer TOKEN`
//      (compared in constant time); without it or with a wrong one, 401 with
//      `WWW-Authenticate: Bearer`.
//   4. Unknown paths are 404.

import NIOHTTP1

/// What the HTTP service serves.
public enum HTTPRoute: Equatable, Sendable {
    case dashboard(DashboardAsset)
    case metrics
    case api(APIResource)
}

/// The read-only API's resources (docs/openapi.yaml).
public enum APIResource: Equatable, Sendable {
    /// `strata pool status --json`
    case pool
    /// `strata volume list --json`
    case volumes
    /// One element of `volumes`.
    case volume(String)
    /// `strata snapshot list VOLUME --json`
    case volumeSnapshots(String)
    /// `strata snapshot list --json`
    case snapshots
    /// `strata connections --json`
    case connections
    /// `strata replicate status --json`
    case replication
    /// `strata remote list --json`
    case remotes
    /// The front ends' I/O counters per volume, for the dashboard's graphs.
    case statistics
}

/// The router's answer: serve a route, or send a ready response (an error).
public enum RouteDecision: Equatable, Sendable {
    case serve(HTTPRoute)
    case respond(HTTPResponse)
}

/// Maps a request head to a route or a refusal.
public struct HTTPRouter: Sendable {
    /// The API prefix; versioned so a later incompatible API can live beside this one.
    public static let apiPrefix = "/api/v1/"
    let token: BearerToken?

    public init(token: BearerToken?) {
        self.token = token
    }

    /// Decides what a request gets.
    public func route(_ head: HTTPRequestHead) -> RouteDecision {
        guard head.method == .GET || head.method == .HEAD else {
            return .respond(
                .error(
                    .methodNotAllowed, code: "methodNotAllowed",
                    "\(head.method.rawValue) \(Self.path(of: head.uri)): the HTTP service is read-only; use GET or HEAD",
                    headers: [("Allow", "GET, HEAD")]))
        }
        let path = Self.path(of: head.uri)
        if let asset = DashboardAsset(path: path) { return .serve(.dashboard(asset)) }
        guard let route = Self.dataRoute(path) else {
            return .respond(
                .error(
                    .notFound, code: "notFound",
                    "GET \(path): no such resource; see docs/openapi.yaml for the API's paths, or /metrics"))
        }
        if let token = self.token, !token.authorizes(head.headers["Authorization"].first) {
            return .respond(
                .error(
                    .unauthorized, code: "unauthorized",
                    "GET \(path): missing or wrong bearer token; send Authorization: Bearer TOKEN with the token in --http-token-file",
                    headers: [("WWW-Authenticate", "Bearer realm=\"strata\"")]))
        }
        return .serve(route)
    }

    /// /metrics or an API resource, or nil.
    static func dataRoute(_ path: String) -> HTTPRoute? {
        if path == "/metrics" { return .metrics }
        guard path.hasPrefix(Self.apiPrefix) else { return nil }
        let decoded = path.dropFirst(Self.apiPrefix.count).split(separator: "/", omittingEmptySubsequences: false)
            .map { Self.percentDecoded(String($0)) }
        let parts = decoded.compactMap { $0 }
        guard parts.count == decoded.count else { return nil }
        switch parts.count {
        case 1:
            switch parts[0] {
            case "pool": return .api(.pool)
            case "volumes": return .api(.volumes)
            case "snapshots": return .api(.snapshots)
            case "connections": return .api(.connections)
            case "replication": return .api(.replication)
            case "remotes": return .api(.remotes)
            case "statistics": return .api(.statistics)
            default: return nil
            }
        case 2 where parts[0] == "volumes" && !parts[1].isEmpty:
            return .api(.volume(parts[1]))
        case 3 where parts[0] == "volumes" && parts[2] == "snapshots" && !parts[1].isEmpty:
            return .api(.volumeSnapshots(parts[1]))
        default:
            return nil
        }
    }

    /// The URI's path, without its query or fragment.
    static func path(of uri: String) -> String {
        let end = uri.firstIndex { $0 == "?" || $0 == "#" } ?? uri.endIndex
        return String(uri[..<end])
    }

    /// Decodes %XX escapes (RFC 3986 §2.1); nil for a malformed escape or invalid UTF-8.
    static func percentDecoded(_ text: String) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue)
            else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
