// Opening a pool for serving or for a command: the engine's `Pool.open` plus what the engine
// cannot know by itself, how to open a base image file (StrataImage's decoders). Every place
// that opens a pool directory goes through here, so a based volume reads the same way in the
// daemon, in an offline command and in a stream.

import StrataCore
import StrataImage

extension Pool {
    /// Opens the pool in `directory` with base images opened by StrataImage.
    /// - Throws: as `Pool.open`.
    public static func openServing(directory: String, readOnly: Bool = false) throws(StrataError) -> Pool {
        let pool = try Pool.open(directory: directory, readOnly: readOnly)
        pool.bases.setOpener { path throws(StrataError) in try BaseImages.open(path: path) }
        return pool
    }
}
