// Opening a pool for serving or for a command: the engine's `Pool.open` plus what the engine
// cannot know by itself, how to open a base image: a file (StrataImage's decoders) or a remote
// snapshot (StrataObjectStore's `RemoteBase`, with the remote from the pool's remotes.json). Every place
// that opens a pool directory goes through here, so a based volume reads the same way in the
// daemon, in an offline command and in a stream.

import StrataCore
import StrataImage
import StrataObjectStore

extension Pool {
    /// Opens the pool in `directory` with base files opened by StrataImage and remote bases by
    /// StrataObjectStore.
    /// - Throws: as `Pool.open`.
    public static func openServing(directory: String, readOnly: Bool = false) throws(StrataError) -> Pool {
        let pool = try Pool.open(directory: directory, readOnly: readOnly)
        let remotes = RemoteTable(directory: directory)
        pool.bases.setOpener { source throws(StrataError) -> any BaseImage in
            switch source {
            case .file(let path): return try BaseImages.open(path: path)
            case .remote(let reference): return try RemoteBase.reopen(reference, remotes: remotes)
            }
        }
        return pool
    }
}
