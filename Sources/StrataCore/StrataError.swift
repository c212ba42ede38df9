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
        /// A peer or client failed authentication (a wrong replication secret, a wrong CHAP answer).
        case unauthorized
    }

    public let code: Code
    public let message: String
    /// What the message names, as fields: callers and tests match these, never the text.
    /// The byte offset in a stream or file where the problem starts.
    public var byteOffset: UInt64? = nil
    /// The metadata page that is damaged.
    public var page: PageNumber? = nil
    /// Snapshot GUIDs involved (a base mismatch names the expected and the found one).
    public var guids: [StrataGUID] = []

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// This error with `byteOffset` set.
    public func at(byteOffset offset: UInt64) -> StrataError {
        var copy = self
        copy.byteOffset = offset
        return copy
    }

    /// This error, its code and fields kept, with `note` added to the message.
    public func appending(_ note: String) -> StrataError { self.withMessage(self.message + note) }

    /// This error, its code and fields kept, with another message (context added around it).
    public func withMessage(_ message: String) -> StrataError {
        var copy = StrataError(self.code, message)
        copy.byteOffset = self.byteOffset
        copy.page = self.page
        copy.guids = self.guids
        return copy
    }

    /// This error with `guids` set.
    public func naming(guids: [StrataGUID]) -> StrataError {
        var copy = self
        copy.guids = guids
        return copy
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
        case .unauthorized: return EACCES
        }
    }

    static func io(_ operation: String, _ object: String, errno code: Int32) -> StrataError {
        StrataError(.io, "\(operation) \(object): \(String(cString: strerror(code))) (errno=\(code))")
    }

    static func corrupt(page: PageNumber, _ what: String) -> StrataError {
        var error = StrataError(.corrupt, "metadata page \(page): \(what)")
        error.page = page
        return error
    }
}
