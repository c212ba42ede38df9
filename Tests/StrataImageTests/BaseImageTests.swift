import StrataCore
import StrataImage
import Testing

@Suite struct BaseImageTests {
    @Test func aMissingFileIsRefused() {
        #expect(throws: StrataError.self) { _ = try BaseImages.open(path: "/nonexistent/base.img") }
    }
}
