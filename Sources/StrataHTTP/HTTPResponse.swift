// A whole HTTP response as a value: status, headers and body. The service's bodies are small
// (a metrics page, a JSON listing, a dashboard file), so each is built whole and sent with its
// Content-Length; errors are JSON objects with the control protocol's `code` and `message`
// fields (ControlError), so a script reads an HTTP error the way it reads a CLI one.

import Foundation
import NIOHTTP1
import StrataCore

/// A response, built whole before it is written.
public struct HTTPResponse: Equatable, Sendable {
    public var status: HTTPResponseStatus
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: HTTPResponseStatus, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func == (left: HTTPResponse, right: HTTPResponse) -> Bool {
        left.status == right.status && left.body == right.body
            && left.headers.map { "\($0.0): \($0.1)" } == right.headers.map { "\($0.0): \($0.1)" }
    }

    /// A 200 response with `body` of `contentType`.
    public static func ok(_ body: [UInt8], contentType: String) -> HTTPResponse {
        HTTPResponse(
            status: .ok, headers: [("Content-Type", contentType), ("Cache-Control", "no-store")], body: body)
    }

    /// An error response: `{"code": …, "message": …}` as JSON.
    public static func error(
        _ status: HTTPResponseStatus, code: String, _ message: String, headers: [(String, String)] = []
    ) -> HTTPResponse {
        let body = APIErrorBody(code: code, message: message).encoded
        return HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: body)
    }

    /// The response for an engine error, its status chosen by the error's code.
    public static func error(_ error: StrataError) -> HTTPResponse {
        let status: HTTPResponseStatus
        switch error.code {
        case .notFound: status = .notFound
        case .invalidArgument: status = .badRequest
        case .unauthorized: status = .forbidden
        case .unsupported: status = .notImplemented
        case .busy: status = .serviceUnavailable
        case .readOnly, .alreadyExists, .noSpace, .io, .corrupt, .failed: status = .internalServerError
        }
        return .error(status, code: error.code.rawValue, error.message)
    }
}

/// The body of an error response (the control protocol's `ControlError` fields).
struct APIErrorBody: Codable {
    let code: String
    let message: String

    var encoded: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Two strings always encode.
        return Array((try? encoder.encode(self)) ?? Data()) + [UInt8(ascii: "\n")]
    }
}
