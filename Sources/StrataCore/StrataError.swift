// The engine's one error type. Each error carries a code that maps to an errno (for NBD and
// iSCSI front ends, and the CLI's exit status) and a message shaped
// `<op> <object>: <what failed> (key=value …)` plus the fix when the user can act (STYLE §4).
// Callers match on `code`, never on the message.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An operating error from the engine: bad input, missing object, no space, I/O or corruption.
public struct StrataError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure, independent of the message text.
    public enum Code: String, Sendable, Equatable {
        case invalidArgument, notFound, alreadyExists, readOnly, noSpace, io, corrupt, busy, failed
        /// The pool was written by a newer strata (a format version or feature this one does not know).
        case unsupported
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }

    /// The errno a block protocol reports for this error (NBD's error field, SCSI sense mapping).
    public var errno: Int32 {
        switch self.code {
        case .invalidArgument: return EINVAL
        case .notFound: return ENOENT
        case .alreadyExists: return EEXIST
        case .readOnly: return EPERM
        case .noSpace: return ENOSPC
        case .io, .corrupt, .failed: return EIO
        case .busy: return EBUSY
        case .unsupported: return EOPNOTSUPP
        }
    }

    static func io(_ operation: String, _ object: String, errno code: Int32) -> StrataError {
        StrataError(.io, "\(operation) \(object): \(String(cString: strerror(code))) (errno=\(code))")
    }

    static func corrupt(page: PageNumber, _ what: String) -> StrataError {
        StrataError(
            .corrupt,
            "metadata page \(page): \(what)"
        )
    }
}
