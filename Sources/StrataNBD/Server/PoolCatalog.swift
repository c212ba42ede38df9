// Exports straight from the pool: every volume read-write, every snapshot read-only. A volume
// or snapshot created while serving is exportable at once, since each lookup asks the pool.
// Only "absent" is forgiven: a target deleted between the listing and its lookup is left out
// of LIST; any other engine error (I/O, corruption, a failed pool) reaches the client.
// Foreign exports (a mirror leg's copy, in the leg's pool) are asked first.

import StrataCore

/// An `NBDExportCatalog` over a pool.
public struct PoolCatalog: NBDExportCatalog {
    public let pool: Pool
    public let foreign: (any ForeignExports)?

    public init(pool: Pool, foreign: (any ForeignExports)? = nil) {
        self.pool = pool
        self.foreign = foreign
    }

    public func exports() throws(StrataError) -> [NBDExport] {
        var exports: [NBDExport] = []
        for name in self.pool.targets().map(\.name) + (self.foreign?.foreignNames() ?? []) {
            do throws(StrataError) {
                exports.append(try self.export(named: name))
            } catch where error.code == .notFound {
                continue
            }
        }
        return exports
    }

    public func export(named name: String) throws(StrataError) -> NBDExport {
        if let (pool, handle) = self.foreign?.foreign(name) {
            let size = try pool.size(of: handle)
            return NBDExport(
                name: name, description: "Strata mirror leg copy \(name) (\(SizeParser.format(size))\(handle.readOnly ? ", read-only" : ""))",
                size: size, readOnly: handle.readOnly, handle: handle, pool: pool)
        }
        let handle = try self.pool.handle(name, frontEnd: .nbd)
        let size = try self.pool.size(of: handle)
        let description =
            handle.readOnly
            ? "Strata snapshot \(name) (\(SizeParser.format(size)), read-only)"
            : "Strata volume \(name) (\(SizeParser.format(size)))"
        return NBDExport(name: name, description: description, size: size, readOnly: handle.readOnly, handle: handle)
    }
}
