// Constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), fixed newstyle
// negotiation and the transmission phase with simple and structured replies. Names follow
// proto.md without the NBD_ prefix.

/// Magic numbers and constants from proto.md.
public enum NBD {
    public static let initMagic: UInt64 = 0x4E42_444D_4147_4943  // "NBDMAGIC"
    public static let optionMagic: UInt64 = 0x4948_4156_454F_5054  // "IHAVEOPT"
    public static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9
    public static let requestMagic: UInt32 = 0x2560_9513
    public static let simpleReplyMagic: UInt32 = 0x6744_6698
    public static let structuredReplyMagic: UInt32 = 0x668E_33EF

    // Handshake flags (server) and client flags.
    public static let flagFixedNewstyle: UInt16 = 1 << 0
    public static let flagNoZeroes: UInt16 = 1 << 1
    public static let clientFlagFixedNewstyle: UInt32 = 1 << 0
    public static let clientFlagNoZeroes: UInt32 = 1 << 1

    /// Options (proto.md "Option types").
    public enum Option: UInt32, Sendable {
        case exportName = 1, abort = 2, list = 3, peekExport = 4, startTLS = 5, info = 6, go = 7
        case structuredReply = 8, listMetaContext = 9, setMetaContext = 10, extendedHeaders = 11
    }

    /// Option reply types.
    public enum OptionReply: UInt32, Sendable {
        case ack = 1, server = 2, info = 3, metaContext = 4
        case errorUnsupported = 0x8000_0001, errorPolicy = 0x8000_0002, errorInvalid = 0x8000_0003
        case errorPlatform = 0x8000_0004, errorTLSRequired = 0x8000_0005, errorUnknown = 0x8000_0006
        case errorShutdown = 0x8000_0007, errorBlockSizeRequired = 0x8000_0008, errorTooBig = 0x8000_0009
    }

    /// Information types for NBD_OPT_INFO and NBD_OPT_GO.
    public enum Info: UInt16, Sendable {
        case export = 0, name = 1, description = 2, blockSize = 3
    }

    /// Transmission flags.
    public struct TransmissionFlags: OptionSet, Sendable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let hasFlags = Self(rawValue: 1 << 0)
        public static let readOnly = Self(rawValue: 1 << 1)
        public static let sendFlush = Self(rawValue: 1 << 2)
        public static let sendFUA = Self(rawValue: 1 << 3)
        public static let rotational = Self(rawValue: 1 << 4)
        public static let sendTrim = Self(rawValue: 1 << 5)
        public static let sendWriteZeroes = Self(rawValue: 1 << 6)
        public static let sendDF = Self(rawValue: 1 << 7)
        public static let canMultiConn = Self(rawValue: 1 << 8)
        public static let sendResize = Self(rawValue: 1 << 9)
        public static let sendCache = Self(rawValue: 1 << 10)
        public static let sendFastZero = Self(rawValue: 1 << 11)
    }

    /// Commands.
    public enum Command: UInt16, Sendable {
        case read = 0, write = 1, disconnect = 2, flush = 3, trim = 4, cache = 5, writeZeroes = 6, blockStatus = 7
        case resize = 8
    }

    /// Command flags.
    public struct CommandFlags: OptionSet, Sendable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let fua = Self(rawValue: 1 << 0)
        public static let noHole = Self(rawValue: 1 << 1)
        public static let dontFragment = Self(rawValue: 1 << 2)
        public static let requestOne = Self(rawValue: 1 << 3)
        public static let fastZero = Self(rawValue: 1 << 4)
        /// Every flag this server knows; any other bit is refused with EINVAL.
        public static let known: Self = [.fua, .noHole, .dontFragment, .requestOne, .fastZero]
    }

    /// Structured reply chunk types and flags.
    public static let replyFlagDone: UInt16 = 1 << 0
    public enum ReplyType: UInt16, Sendable {
        case none = 0, offsetData = 1, offsetHole = 2, blockStatus = 5
        case error = 0x8001, errorOffset = 0x8002
    }

    /// Errors carried in replies (proto.md "Error values").
    public enum Errno: UInt32, Sendable {
        case ok = 0, permission = 1, io = 5, noMemory = 12, invalid = 22, noSpace = 28, overflow = 75
        case notSupported = 95, shutdown = 108
    }

    /// `base:allocation` descriptor flags.
    public static let stateHole: UInt32 = 1 << 0
    public static let stateZero: UInt32 = 1 << 1
    public static let baseAllocation = "base:allocation"
    public static let baseAllocationID: UInt32 = 1
}
