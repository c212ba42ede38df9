// How a front end splits the requests of one pass into work items for the engine workers:
// dealt round-robin, so that large and small requests spread over the lanes and each lane keeps
// their order.

extension Array {
    /// The elements dealt round-robin into at most `hands` arrays (as many as there are
    /// elements, when fewer), each in the order the elements had here.
    public func dealt(into hands: Int) -> [[Element]] {
        let count = Swift.min(self.count, hands)
        if count == 1 { return [self] }
        return (0..<count).map { hand in stride(from: hand, to: self.count, by: count).map { self[$0] } }
    }
}
