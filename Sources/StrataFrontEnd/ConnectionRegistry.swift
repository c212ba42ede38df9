// Every open front-end connection (NBD or iSCSI), by the volume it serves, so the control plane can name the
// connections that block a delete, disconnect them with --force, and drain them all at
// shutdown.

import NIOCore
import Synchronization

/// Open connections of the front ends.
public final class ConnectionRegistry: Sendable {
    public struct Entry: Sendable {
        public let channel: any Channel
        public let protocolName: String
        public var export: String?
        public var volumeID: UInt64?
        public let remote: String
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

    public init() {}

    public func add(_ channel: any Channel, protocolName: String) {
        let remote = channel.remoteAddress?.description ?? "unknown"
        self.entries.withLock {
            $0[ObjectIdentifier(channel)] = Entry(
                channel: channel, protocolName: protocolName, export: nil, volumeID: nil, remote: remote)
        }
    }

    public func attach(_ channel: any Channel, export: String, volumeID: UInt64) {
        self.entries.withLock {
            $0[ObjectIdentifier(channel)]?.export = export
            $0[ObjectIdentifier(channel)]?.volumeID = volumeID
        }
    }

    public func remove(_ channel: any Channel) {
        _ = self.entries.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Connections using volume or snapshot `id`.
    public func connections(volumeIDs ids: Set<UInt64>) -> [Entry] {
        self.entries.withLock { entries in
            entries.values.filter { entry in entry.volumeID.map { ids.contains($0) } ?? false }
        }
    }

    /// All connections.
    public var all: [Entry] { self.entries.withLock { Array($0.values) } }

    public var count: Int { self.entries.withLock { $0.count } }
}

/// Sent down a connection's pipeline to make it finish what is in flight and close.
public struct DrainEvent: Sendable {
    public init() {}
}
