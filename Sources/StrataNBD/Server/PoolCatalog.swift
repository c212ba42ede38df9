// Exports straight from the pool: every volume read-write, every snapshot read-only. A volume
// or snapshot created while serving is exportable at once, since each lookup asks the pool.
// Only "absent" is forgiven: a target deleted between the listing and its lookup is left out
// of LIST; any other engine error (I/O, corruption, a failed pool) reaches the client.

import StrataCore

/// An `NBDExportCatalog` over a pool.
public struct PoolCatalog: NBDExportCatalog {
    public let pool: Pool

    public init(pool: Pool) { self.pool = pool }

    public func exports() throws(StrataError) -> [NBDExport] {
        var exports: [NBDExport] = []
        for target in self.pool.targets() {
            do throws(StrataError) {
                exports.append(try self.export(named: target.name))
            } catch where error.code == .notFound {
                continue
            }
        }
        return exports
    }

    public func export(named name: String) throws(StrataError) -> NBDExport {
        let handle = try self.pool.handle(name)
        let size = try self.pool.size(of: handle)
        let description =
            handle.readOnly
            ? "Strata snapshot \(name) (\(SizeParser.format(size)), read-only)"
            : "Strata volume \(name) (\(SizeParser.format(size)))"
        return NBDExport(name: name, description: description, size: size, readOnly: handle.readOnly, handle: handle)
    }
}
