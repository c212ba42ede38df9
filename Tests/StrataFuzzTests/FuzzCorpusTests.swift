// Every checked-in fuzz input, replayed through its target in the ordinary build, without the
// sanitizer: a decoder change that makes a seed or a past finding trap fails `swift test`
// even where the sanitizer build does not run. Each corpus directory must exist and hold inputs,
// so a target cannot lose its seeds unnoticed.

import Foundation
import StrataFuzz
import Testing

@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")

    @Test(arguments: FuzzTargets.all.map(\.name))
    func corpusReplays(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let directory = Self.corpus.appendingPathComponent(name)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(!files.isEmpty, "Fuzz/corpus/\(name) holds no inputs; run scripts/fuzz-corpus.sh")
        for file in files {
            let data = try Data(contentsOf: directory.appendingPathComponent(file))
            target.run(Array(data))
        }
    }

    @Test func everyTargetHasACorpusDirectory() throws {
        let directories = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        #expect(directories == FuzzTargets.all.map(\.name).sorted())
    }
}
