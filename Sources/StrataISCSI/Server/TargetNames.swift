// Target names (DESIGN.md): volume VOLUME is `iqn.2026-11.org.strata:VOLUME`, snapshot
// VOLUME@SNAPSHOT is `iqn.2026-11.org.strata:VOLUME:SNAPSHOT`. Volume and snapshot names never
// hold a colon, so the mapping is one to one.

import Foundation

public enum TargetNames {
    public static let prefix = "iqn.2026-11.org.strata:"

    /// The target name of a pool object (VOLUME or VOLUME@SNAPSHOT).
    public static func targetName(for object: String) -> String {
        Self.prefix + object.replacingOccurrences(of: "@", with: ":")
    }

    /// The pool object a target name names, or nil for a name outside Strata's prefix. iSCSI
    /// names compare without regard to case (RFC 3722), so the prefix does too.
    public static func object(for targetName: String) -> String? {
        guard targetName.lowercased().hasPrefix(Self.prefix) else { return nil }
        let rest = targetName.dropFirst(Self.prefix.count)
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        switch parts.count {
        case 1 where !parts[0].isEmpty: return String(parts[0])
        case 2 where !parts[0].isEmpty && !parts[1].isEmpty: return "\(parts[0])@\(parts[1])"
        default: return nil
        }
    }

    /// The object among `objects` that `object` names: itself, else the first equal to it without
    /// regard to case (RFC 3722); nil when none is.
    public static func match(_ object: String, among objects: [String]) -> String? {
        if objects.contains(object) { return object }
        let lowered = object.lowercased()
        return objects.first { $0.lowercased() == lowered }
    }
}

/// The targets as they were when listed: what SendTargets answers from, so that a Text Request
/// never takes the pool's locks on an event loop (the connection lists them on its engine
/// workers first).
public struct TargetList: SendTargetsDirectory {
    public let objects: [String]

    public init(_ objects: [String]) {
        self.objects = objects
    }

    public func targetObjects() -> [String] { self.objects }

    public func object(forTargetName name: String) -> String? {
        TargetNames.object(for: name).flatMap { TargetNames.match($0, among: self.objects) }
    }
}
