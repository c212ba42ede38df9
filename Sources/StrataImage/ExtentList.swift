// Building an allocation answer: extents appended in order, adjacent ones with the same
// `mapped` merged, empty ones dropped, so every decoder returns the merged, covering list
// the `BaseImage` protocol promises without a second pass.

import StrataCore

/// Merged, ordered extents under construction.
struct ExtentList {
    private(set) var extents: [MappingExtent] = []

    /// Appends [offset, offset + length); merges it into the last extent when they touch and agree.
    /// - Precondition: `offset` is where the previous extent ended (the list stays covering).
    mutating func append(offset: UInt64, length: UInt64, mapped: Bool) {
        guard length > 0 else { return }
        if let last = self.extents.last {
            precondition(last.offset + last.length == offset, "extent list: gap or overlap at \(offset)")
            if last.mapped == mapped {
                self.extents[self.extents.count - 1] = MappingExtent(
                    offset: last.offset, length: last.length + length, mapped: mapped)
                return
            }
        }
        self.extents.append(MappingExtent(offset: offset, length: length, mapped: mapped))
    }

    /// Appends extents another image returned, merging at the seam.
    mutating func append(contentsOf others: [MappingExtent]) {
        for extent in others {
            self.append(offset: extent.offset, length: extent.length, mapped: extent.mapped)
        }
    }
}
