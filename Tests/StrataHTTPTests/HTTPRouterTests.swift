// The router as a pure function: methods, paths, percent-decoding and the bearer token.

import NIOHTTP1
import StrataCore
import Testing

@testable import StrataHTTP

@Suite struct HTTPRouterTests {
    func head(_ method: HTTPMethod, _ uri: String, authorization: String? = nil) -> HTTPRequestHead {
        var headers = HTTPHeaders()
        if let authorization { headers.add(name: "Authorization", value: authorization) }
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
    }

    @Test(arguments: [
        ("/", HTTPRoute.dashboard(.page)), ("/index.html", .dashboard(.page)), ("/dashboard.js", .dashboard(.script)),
        ("/dashboard.css", .dashboard(.style)), ("/metrics", .metrics), ("/metrics?x=1", .metrics),
        ("/api/v1/pool", .api(.pool)), ("/api/v1/volumes", .api(.volumes)), ("/api/v1/volumes/vm1", .api(.volume("vm1"))),
        ("/api/v1/volumes/vm1/snapshots", .api(.volumeSnapshots("vm1"))), ("/api/v1/snapshots", .api(.snapshots)),
        ("/api/v1/connections", .api(.connections)), ("/api/v1/replication", .api(.replication)),
        ("/api/v1/remotes", .api(.remotes)), ("/api/v1/statistics", .api(.statistics)),
        ("/api/v1/volumes/a%2Eb", .api(.volume("a.b"))),
    ])
    func routes(uri: String, expected: HTTPRoute) {
        for method in [HTTPMethod.GET, .HEAD] {
            #expect(HTTPRouter(token: nil).route(self.head(method, uri)) == .serve(expected))
        }
    }

    @Test(arguments: ["/api/v1/", "/api/v1/nope", "/api/v2/pool", "/api/v1/volumes/", "/api/v1/volumes/vm1/x",
        "/api/v1/volumes/%zz", "/favicon.ico", "/metrics/x"])
    func unknownPathsAreNotFound(uri: String) {
        guard case .respond(let response) = HTTPRouter(token: nil).route(self.head(.GET, uri)) else {
            Issue.record("\(uri) was served")
            return
        }
        #expect(response.status == .notFound)
    }

    @Test(arguments: [HTTPMethod.POST, .PUT, .DELETE, .PATCH, .OPTIONS])
    func writesAreRefusedWith405(method: HTTPMethod) {
        for uri in ["/", "/metrics", "/api/v1/volumes"] {
            guard case .respond(let response) = HTTPRouter(token: nil).route(self.head(method, uri)) else {
                Issue.record("\(method) \(uri) was served")
                continue
            }
            #expect(response.status == .methodNotAllowed)
            #expect(response.headers.contains { $0.0 == "Allow" && $0.1 == "GET, HEAD" })
        }
    }

    @Test func tokenGuardsDataButNotTheDashboardFiles() throws {
        let router = HTTPRouter(token: try BearerToken("s3cret-token", source: "test"))
        #expect(router.route(self.head(.GET, "/")) == .serve(.dashboard(.page)))
        for authorization in [nil, "Bearer wrong", "Bearer s3cret-toke", "Bearer s3cret-token2", "Basic s3cret-token", ""] {
            for uri in ["/metrics", "/api/v1/pool"] {
                guard case .respond(let response) = router.route(self.head(.GET, uri, authorization: authorization)) else {
                    Issue.record("\(uri) served with \(authorization ?? "no header")")
                    continue
                }
                #expect(response.status == .unauthorized)
                #expect(response.headers.contains { $0.0 == "WWW-Authenticate" })
            }
        }
        #expect(router.route(self.head(.GET, "/metrics", authorization: "Bearer s3cret-token")) == .serve(.metrics))
        #expect(router.route(self.head(.GET, "/api/v1/pool", authorization: "bearer s3cret-token")) == .serve(.api(.pool)))
    }

    @Test func constantTimeEqualityIsEquality() {
        #expect(BearerToken.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!BearerToken.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!BearerToken.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!BearerToken.constantTimeEqual([], Array("a".utf8)))
        // Lengths that differ by a multiple of 256 must still differ.
        #expect(!BearerToken.constantTimeEqual([UInt8](repeating: 0, count: 256), []))
    }

    @Test func badTokensAreRefused() {
        #expect(throws: StrataError.self) { try BearerToken("", source: "f") }
        #expect(throws: StrataError.self) { try BearerToken("has space", source: "f") }
        #expect(throws: StrataError.self) { try BearerToken("new\nline", source: "f") }
    }

    @Test func nonLoopbackNeedsAToken() throws {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost"] {
            try HTTPServerOptions(host: host, port: 1).validate()
        }
        for host in ["0.0.0.0", "192.0.2.1", "::", "example.org"] {
            #expect(throws: StrataError.self) { try HTTPServerOptions(host: host, port: 1).validate() }
            try HTTPServerOptions(host: host, port: 1, tokenFile: "/t").validate()
        }
    }
}
