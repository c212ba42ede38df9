// How a pass's requests are split into work items (`Array.dealt(into:)`, StrataFrontEnd),
// which NBD and iSCSI share.

import StrataFrontEnd
import Testing

@Suite struct LaneSplitTests {
    @Test func dealtRoundRobinKeepingOrder() {
        #expect(Array(0..<10).dealt(into: 4) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]])
        #expect(Array(0..<3).dealt(into: 4) == [[0], [1], [2]])
        #expect([Int]().dealt(into: 4).isEmpty)
        #expect(Array(0..<5).dealt(into: 1) == [[0, 1, 2, 3, 4]])
    }
}
