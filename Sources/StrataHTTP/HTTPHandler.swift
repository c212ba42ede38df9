// One HTTP connection (NIOHTTP1's server pipeline below it): collects a request, asks the
// router, and writes the whole response. Dashboard files and refusals are answered on the
// event loop; /metrics and the API read the pool, so they run on the thread pool and their
// response comes back to the loop. One request at a time per connection (HTTP/1.1 without
// pipelining in parallel): the next head is read only after the response is written, which
// bounds what one client can make the daemon hold.

import NIOCore
import NIOHTTP1
import StrataCore
import StrataFrontEnd

/// The channel handler of one HTTP connection.
final class HTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let router: HTTPRouter
    let content: any HTTPContentSource
    let workers: any EngineWorkers
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    /// - Parameter workers: where /metrics and the API run; the server gives its thread pool, a
    ///   test workers that run them in place.
    init(router: HTTPRouter, content: any HTTPContentSource, workers: any EngineWorkers) {
        self.router = router
        self.content = content
        self.workers = workers
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.bodyBytes = 0
        case .body(let body):
            self.bodyBytes += body.readableBytes
            if self.bodyBytes > Limits.httpRequestBodyBytesMax, let head = self.head {
                self.head = nil
                let response = HTTPResponse.error(
                    .payloadTooLarge, code: "invalidArgument",
                    "\(head.method.rawValue) \(HTTPRouter.path(of: head.uri)): request body over \(Limits.httpRequestBodyBytesMax) bytes; the HTTP service is read-only")
                self.write(response, for: head, keepAlive: false, context: context)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        switch self.router.route(head) {
        case .respond(let response):
            self.write(response, for: head, keepAlive: head.isKeepAlive, context: context)
        case .serve(.dashboard(let asset)):
            self.write(.ok(asset.body, contentType: asset.contentType), for: head, keepAlive: head.isKeepAlive, context: context)
        case .serve(let route):
            let content = self.content
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            self.workers.run(on: context.eventLoop) { content.response(for: route) }
                .whenComplete { result in
                    let (handler, context) = bound.value
                    let response: HTTPResponse
                    switch result {
                    case .success(let built): response = built
                    case .failure:
                        response = .error(.serviceUnavailable, code: "busy", "the daemon is shutting down")
                    }
                    handler.write(response, for: head, keepAlive: head.isKeepAlive, context: context)
                }
        }
    }

    /// Writes a response; HEAD gets the headers (with the body's length) and no body.
    private func write(_ response: HTTPResponse, for head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        context.write(self.wrapOutboundOut(.head(responseHead)), promise: nil)
        if head.method != .HEAD && !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
