// The connection handler in NIOHTTP1's real server pipeline on an EmbeddedChannel: raw request
// bytes in, raw response bytes out, with a content source that counts its calls.

import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import StrataCore
import StrataTesting
import Synchronization
import Testing

@testable import StrataHTTP

/// A content source with fixed answers that records what it was asked.
final class FixedContent: HTTPContentSource {
    let asked = Mutex<[String]>([])

    func metricsText() -> [UInt8] {
        self.asked.withLock { $0.append("metrics") }
        return Array("strata_pool_volumes 2\n".utf8)
    }

    func json(for resource: APIResource) throws(StrataError) -> [UInt8] {
        self.asked.withLock { $0.append("\(resource)") }
        if case .volume(let name) = resource, name != "vm1" {
            throw StrataError(.notFound, "GET volume \(name): no such volume")
        }
        return Array("[]\n".utf8)
    }
}

@Suite struct HTTPHandlerTests {
    /// Sends `request` through a fresh pipeline and returns the raw response and what the source was asked.
    func exchange(_ request: String, token: BearerToken? = nil) throws -> (String, [String], Bool) {
        let content = FixedContent()
        let channel = EmbeddedChannel()
        // Connected, so a close the handler asks for shows as an inactive channel.
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 10811)).wait()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(
            HTTPHandler(router: HTTPRouter(token: token), content: content, workers: InPlaceWorkers()))
        try channel.writeInbound(channel.allocator.buffer(string: request))
        var response = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            response += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        let open = channel.isActive
        _ = try? channel.finish()
        return (response, content.asked.withLock { $0 }, open)
    }

    @Test func getMetricsAnswersWithTheSourceText() throws {
        let (response, asked, open) = try self.exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("Content-Type: text/plain; version=0.0.4"))
        #expect(response.hasSuffix("\r\n\r\nstrata_pool_volumes 2\n"))
        #expect(response.contains("Content-Length: 22"))
        #expect(asked == ["metrics"])
        #expect(open)
    }

    @Test func headHasTheLengthButNoBody() throws {
        let (response, _, _) = try self.exchange("HEAD /api/v1/volumes HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("Content-Length: 3\r\n"))
        #expect(response.hasSuffix("\r\n\r\n"))
    }

    @Test func postIs405AndNeverReachesTheSource() throws {
        let (response, asked, _) = try self.exchange(
            "POST /api/v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        #expect(response.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(response.contains("Allow: GET, HEAD\r\n"))
        #expect(response.contains("\"code\" : \"methodNotAllowed\""))
        #expect(asked.isEmpty)
    }

    @Test func missingTokenIs401() throws {
        let token = try BearerToken("abc", source: "test")
        let (refused, asked, _) = try self.exchange("GET /api/v1/pool HTTP/1.1\r\nHost: x\r\n\r\n", token: token)
        #expect(refused.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        #expect(asked.isEmpty)
        let (served, _, _) = try self.exchange(
            "GET /api/v1/pool HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n\r\n", token: token)
        #expect(served.hasPrefix("HTTP/1.1 200 OK\r\n"))
    }

    @Test func engineErrorsMapToStatusAndJSON() throws {
        let (response, _, _) = try self.exchange("GET /api/v1/volumes/nope HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        #expect(response.contains("\"message\" : \"GET volume nope: no such volume\""))
    }

    @Test func dashboardIsServedFromTheBinary() throws {
        let (page, asked, _) = try self.exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(page.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(page.contains("<script src=\"/dashboard.js\"></script>"))
        #expect(asked.isEmpty)
        for asset in [DashboardAsset.page, .style, .script] {
            let text = String(decoding: asset.body, as: UTF8.self)
            // No fetch from another host: no absolute URLs but the SVG namespace name.
            #expect(!text.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").contains("http://"))
            #expect(!text.contains("https://"))
        }
    }

    @Test func connectionCloseIsHonoured() throws {
        let (response, _, open) = try self.exchange("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(response.contains("Connection: close\r\n"))
        #expect(!open)
    }
}
