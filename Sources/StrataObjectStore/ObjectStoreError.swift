// The one place an HTTP answer or a transport failure becomes a `StrataError`. Messages follow
// STYLE §4: `<op> <object> on <remote>: <what failed> (status=…)`, then the fix. Callers match
// on the code, never on the text.

import StrataCore

/// What an object-store request was about, for its error message.
public struct RequestContext: Sendable {
    /// `put`, `get`, `head`, `delete`, `list`, `authenticate`, `check container`.
    public let operation: String
    /// The object key, or the container for container requests.
    public let object: String
    /// The remote's label (`remote r1 (s3 http://127.0.0.1:8080/bucket)`).
    public let remote: String
    /// True when the request is about the container itself, so a 404 means a missing container.
    public let isContainer: Bool

    public init(operation: String, object: String, remote: String, isContainer: Bool = false) {
        self.operation = operation
        self.object = object
        self.remote = remote
        self.isContainer = isContainer
    }
}

enum ObjectStoreError {
    /// The error for a final HTTP answer that is not a success.
    static func http(_ context: RequestContext, status: UInt, detail: String, attempts: Int) -> StrataError {
        let head = "\(context.operation) \(context.object) on \(context.remote)"
        let note = detail.isEmpty ? "" : " \(detail)"
        switch status {
        case 401:
            return StrataError(
                .invalidArgument,
                "\(head): not authenticated (status=401\(note)); check the user and key (strata remote add again with the right --key-file or --secret-key-file)"
            )
        case 403:
            return StrataError(
                .invalidArgument,
                "\(head): access denied (status=403\(note)); check the credentials and the container's ACL: this user may not read or write it"
            )
        case 404 where context.isContainer:
            return StrataError(
                .notFound,
                "\(head): the container or bucket does not exist (status=404\(note)); create it (strata remote add … --create) or fix --container/--bucket"
            )
        case 404:
            return StrataError(.notFound, "\(head): no such object (status=404\(note))")
        case 500...:
            return StrataError(
                .io,
                "\(head): the store failed (status=\(status)\(note)) after \(attempts) attempts; check that the object store is running and healthy"
            )
        default:
            return StrataError(.io, "\(head): unexpected answer (status=\(status)\(note))")
        }
    }

    /// The error for a request that never got an answer.
    static func transport(_ context: RequestContext, url: String, failure: String, attempts: Int) -> StrataError {
        StrataError(
            .io,
            "\(context.operation) \(context.object) on \(context.remote): no answer from \(url) (\(failure)) after \(attempts) attempts; check that the object store is running and the endpoint is right"
        )
    }
}
