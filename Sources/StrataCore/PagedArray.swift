// A fixed-width array kept whole in memory and persisted copy-on-write as pages: the space
// maps (reference counts of metadata pages and of data chunks) and the volume table.
//
// Shape on disk: a root page lists index pages; each index page lists leaf pages; each leaf
// holds `perLeaf` elements. A leaf page number of 0 means "all elements zero" (never
// written), which keeps a new pool's maps free. A commit writes only the leaves that changed
// since the last commit, the index pages that point to them, and a new root; the pages they
// replace are freed once that commit is durable (the owner's pending-free list).
//
// Root page body (kind arrayRoot, level = array id):
// | OFFSET | SIZE | FIELD                                  |
// | 32     | 8    | element count                          |
// | 40     | 8×n  | index page numbers (n = header count)  |
// Index page body (kind arrayIndex): 8×n leaf page numbers from offset 32.
// Leaf page body (kind arrayLeaf): n elements of `Element.width` bytes from offset 32.

/// An element of a `PagedArray`: fixed width, with an all-zero value meaning "empty".
protocol PagedElement: Sendable {
    static var width: Int { get }
    static var zero: Self { get }
    var isZero: Bool { get }
    init(decoding page: [UInt8], at offset: Int)
    func encode(into page: inout [UInt8], at offset: Int)
}

extension UInt32: PagedElement {
    static var width: Int { 4 }
    static var zero: UInt32 { 0 }
    var isZero: Bool { self == 0 }
    init(decoding page: [UInt8], at offset: Int) { self = page.loadLE(at: offset) }
    func encode(into page: inout [UInt8], at offset: Int) { page.storeLE(self, at: offset) }
}

/// Which array a page belongs to, stored in the header's level byte to catch misdirected pointers.
enum ArrayID: UInt8 {
    case volumeTable = 1
    case metadataMap = 2
    case dataMap = 3
}

struct PagedArray<Element: PagedElement> {
    static var perLeaf: Int { (Limits.pageSize - PageHeader.size) / Element.width }
    static var perIndex: Int { (Limits.pageSize - PageHeader.size) / 8 }
    static var indexesPerRoot: Int { (Limits.pageSize - PageHeader.size - 8) / 8 }
    /// Most elements an array can hold with one root page.
    static var capacityMax: Int { Self.perLeaf * Self.perIndex * Self.indexesPerRoot }

    let id: ArrayID
    private(set) var elements: [Element]
    private(set) var leafPages: [PageNumber]
    private(set) var indexPages: [PageNumber]
    private(set) var rootPage: PageNumber
    private var dirtyLeaves: Set<Int> = []
    private var resized = false

    /// A new, all-zero array not yet written (root page .none until the first commit).
    init(id: ArrayID, count: Int) {
        precondition(count <= Self.capacityMax, "array \(id) too large: \(count) > \(Self.capacityMax)")
        self.id = id
        self.elements = [Element](repeating: .zero, count: count)
        let leaves = (count + Self.perLeaf - 1) / Self.perLeaf
        self.leafPages = [PageNumber](repeating: .none, count: leaves)
        self.indexPages = [PageNumber](repeating: .none, count: (leaves + Self.perIndex - 1) / Self.perIndex)
        self.rootPage = .none
        self.resized = true
    }

    var count: Int { self.elements.count }
    var hasChanges: Bool { !self.dirtyLeaves.isEmpty || self.resized }

    subscript(index: Int) -> Element {
        get { self.elements[index] }
        set {
            self.elements[index] = newValue
            self.dirtyLeaves.insert(index / Self.perLeaf)
        }
    }

    /// Grows the array with zero elements.
    mutating func grow(to count: Int) {
        precondition(count >= self.elements.count, "arrays only grow")
        precondition(count <= Self.capacityMax, "array \(self.id) too large: \(count)")
        self.elements.append(contentsOf: [Element](repeating: .zero, count: count - self.elements.count))
        let leaves = (count + Self.perLeaf - 1) / Self.perLeaf
        self.leafPages.append(contentsOf: [PageNumber](repeating: .none, count: leaves - self.leafPages.count))
        let indexes = (leaves + Self.perIndex - 1) / Self.perIndex
        self.indexPages.append(contentsOf: [PageNumber](repeating: .none, count: indexes - self.indexPages.count))
        self.resized = true
    }

    /// Every page the array's committed image occupies (root, index and leaf pages).
    var pages: [PageNumber] {
        var all = [self.rootPage] + self.indexPages + self.leafPages
        all.removeAll { $0 == .none }
        return all
    }

    /// Pages a commit that rewrites every leaf would need.
    static func pagesToRewriteAll(count: Int) -> UInt64 {
        let leaves = (count + Self.perLeaf - 1) / Self.perLeaf
        return UInt64(leaves + (leaves + Self.perIndex - 1) / Self.perIndex + 1)
    }

    /// Encodes the changed pages into new locations.
    /// - Parameters:
    ///   - allocate: gives a free metadata page; the caller guarantees enough are reserved.
    ///   - free: takes a replaced page; the caller reuses it only after this commit is durable.
    ///   - emit: receives each encoded page and where to write it.
    mutating func commit(
        generation: Generation, allocate: () throws(StrataError) -> PageNumber, free: (PageNumber) -> Void,
        emit: (PageNumber, [UInt8]) -> Void
    ) throws(StrataError) {
        guard self.hasChanges else { return }
        var dirtyIndexes = Set(self.dirtyLeaves.map { $0 / Self.perIndex })
        for leaf in self.dirtyLeaves.sorted() {
            let start = leaf * Self.perLeaf
            let end = min(start + Self.perLeaf, self.elements.count)
            let old = self.leafPages[leaf]
            if old != .none { free(old) }
            if self.elements[start..<end].allSatisfy({ $0.isZero }) {
                self.leafPages[leaf] = .none
                continue
            }
            let page = try allocate()
            var bytes = [UInt8](repeating: 0, count: Limits.pageSize)
            for index in start..<end {
                self.elements[index].encode(into: &bytes, at: PageHeader.size + (index - start) * Element.width)
            }
            PageHeader.seal(
                &bytes, kind: .arrayLeaf, level: self.id.rawValue, count: UInt32(end - start), number: page,
                generation: generation)
            emit(page, bytes)
            self.leafPages[leaf] = page
        }
        if self.resized { dirtyIndexes.formUnion(0..<self.indexPages.count) }
        for index in dirtyIndexes.sorted() {
            let old = self.indexPages[index]
            if old != .none { free(old) }
            let page = try allocate()
            let start = index * Self.perIndex
            let end = min(start + Self.perIndex, self.leafPages.count)
            var bytes = [UInt8](repeating: 0, count: Limits.pageSize)
            for leaf in start..<end {
                bytes.storeLE(self.leafPages[leaf].rawValue, at: PageHeader.size + (leaf - start) * 8)
            }
            PageHeader.seal(
                &bytes, kind: .arrayIndex, level: self.id.rawValue, count: UInt32(end - start), number: page,
                generation: generation)
            emit(page, bytes)
            self.indexPages[index] = page
        }
        if self.rootPage != .none { free(self.rootPage) }
        let root = try allocate()
        var bytes = [UInt8](repeating: 0, count: Limits.pageSize)
        bytes.storeLE(UInt64(self.elements.count), at: PageHeader.size)
        for (position, page) in self.indexPages.enumerated() {
            bytes.storeLE(page.rawValue, at: PageHeader.size + 8 + position * 8)
        }
        PageHeader.seal(
            &bytes, kind: .arrayRoot, level: self.id.rawValue, count: UInt32(self.indexPages.count), number: root,
            generation: generation)
        emit(root, bytes)
        self.rootPage = root
        self.dirtyLeaves.removeAll()
        self.resized = false
    }

    /// Loads an array from its root page, verifying every page. Elements are allocated only as
    /// the pages that hold them verify, and each index and leaf page may be named once: a
    /// damaged root with a valid checksum once claimed `capacityMax` volume records and had
    /// them allocated (one allocation of 875 MB) before any other page was read (seen while
    /// writing the volume-table fuzz target and reproduced with it, docs/TESTING.md).
    /// - Parameter readPage: reads one page; `limit` bounds valid page numbers.
    static func load(
        id: ArrayID, root: PageNumber, pageLimit: UInt64, readPage: (PageNumber) throws(StrataError) -> [UInt8]
    ) throws(StrataError) -> PagedArray {
        var seen: Set<PageNumber> = [root]
        func check(_ page: PageNumber, from parent: PageNumber) throws(StrataError) {
            guard page.rawValue >= 2, page.rawValue < pageLimit else {
                throw StrataError.corrupt(page: parent, "\(id) pointer to page \(page) outside the metadata region")
            }
            guard seen.insert(page).inserted else {
                throw StrataError.corrupt(page: parent, "\(id) names page \(page) twice")
            }
        }
        let rootBytes = try readPage(root)
        let rootHeader = try PageHeader.verify(rootBytes, kind: .arrayRoot, number: root)
        guard rootHeader.level == id.rawValue else {
            throw StrataError.corrupt(page: root, "\(id) root belongs to array \(rootHeader.level)")
        }
        let count64: UInt64 = rootBytes.loadLE(at: PageHeader.size)
        guard count64 <= UInt64(Self.capacityMax) else {
            throw StrataError.corrupt(page: root, "\(id) element count \(count64) too large")
        }
        let count = Int(count64)
        let leafCount = (count + Self.perLeaf - 1) / Self.perLeaf
        let indexCount = (leafCount + Self.perIndex - 1) / Self.perIndex
        guard Int(rootHeader.count) == indexCount else {
            throw StrataError.corrupt(page: root, "\(id) index count (expected=\(indexCount) actual=\(rootHeader.count))")
        }
        var array = PagedArray(id: id, count: 0)
        array.rootPage = root
        for index in 0..<indexCount {
            let indexPage = PageNumber(rootBytes.loadLE(at: PageHeader.size + 8 + index * 8))
            try check(indexPage, from: root)
            let indexBytes = try readPage(indexPage)
            let header = try PageHeader.verify(indexBytes, kind: .arrayIndex, number: indexPage)
            let start = index * Self.perIndex
            let end = min(start + Self.perIndex, leafCount)
            guard header.level == id.rawValue, Int(header.count) == end - start else {
                throw StrataError.corrupt(page: indexPage, "\(id) index page header does not match its root")
            }
            array.indexPages.append(indexPage)
            for leaf in start..<end {
                let leafPage = PageNumber(indexBytes.loadLE(at: PageHeader.size + (leaf - start) * 8))
                let first = leaf * Self.perLeaf
                let last = min(first + Self.perLeaf, count)
                array.leafPages.append(leafPage)
                if leafPage == .none {
                    array.elements.append(contentsOf: repeatElement(Element.zero, count: last - first))
                    continue
                }
                try check(leafPage, from: indexPage)
                let leafBytes = try readPage(leafPage)
                let leafHeader = try PageHeader.verify(leafBytes, kind: .arrayLeaf, number: leafPage)
                guard leafHeader.level == id.rawValue, Int(leafHeader.count) == last - first else {
                    throw StrataError.corrupt(page: leafPage, "\(id) leaf page header does not match its index")
                }
                for element in first..<last {
                    array.elements.append(Element(decoding: leafBytes, at: PageHeader.size + (element - first) * Element.width))
                }
            }
        }
        array.resized = false
        array.dirtyLeaves.removeAll()
        return array
    }
}
