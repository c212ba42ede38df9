// Exports straight from the pool: every volume read-write, every snapshot read-only. A volume
// or snapshot created while serving is exportable at once, since each lookup asks the pool.

import StrataCore

/// An `NBDExportCatalog` over a pool.
public struct PoolCatalog: NBDExportCatalog {
    public let pool: Pool

    public init(pool: Pool) { self.pool = pool }

    public func exports() -> [NBDExport] {
        self.pool.targets().compactMap { target in
            try? self.export(named: target.name)
        }
    }

    public func export(named name: String) throws(StrataError) -> NBDExport {
        let handle = try self.pool.handle(name, frontEnd: .nbd)
        let size = try self.pool.size(of: handle)
        let description =
            handle.readOnly
            ? "Strata snapshot \(name) (\(SizeParser.format(size)), read-only)"
            : "Strata volume \(name) (\(SizeParser.format(size)))"
        return NBDExport(name: name, description: description, size: size, readOnly: handle.readOnly, handle: handle)
    }
}
