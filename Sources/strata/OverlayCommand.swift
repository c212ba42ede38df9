import ArgumentParser
import StrataCore
import StrataServer

/// `strata overlay FILE`: `strata serve --overlay FILE` with the defaults, in one word.
struct OverlayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlay",
        abstract: "Serve a writable volume over an image file at once: create (or reuse) it in the pool, print its URIs, serve.",
        discussion: """
            The image (raw, or qcow2 with its backing chain) is read in place and never written; writes \
            go to the pool, so the volume persists across restarts and takes snapshots and layers. \
            Equivalent to `strata serve --overlay FILE [--overlay-name VOL]`, which takes every serve option.
            """)
    @OptionGroup var options: PoolOptions
    @Argument(help: "A raw or qcow2 image file.") var file: String
    @Option(help: "The volume's name (default: the file's name).") var name: String?
    @Option(help: "NBD listen address, ADDR:PORT.") var nbd: String = "127.0.0.1:10809"
    @Option(help: "iSCSI listen address, ADDR:PORT, or 'off'.") var iscsi: String = "127.0.0.1:3260"
    @Option(help: "HTTP service (dashboard, /metrics, /api/v1) listen address, ADDR:PORT, or 'off'.")
    var http: String = "127.0.0.1:10811"

    func run() async throws {
        var arguments = ["--overlay", self.file, "--nbd", self.nbd, "--iscsi", self.iscsi, "--http", self.http]
        if let pool = self.options.pool { arguments += ["--pool", pool] }
        if let name = self.name { arguments += ["--overlay-name", name] }
        let serve = try ServeCommand.parse(arguments)
        try serve.validate()
        try await serve.run()
    }
}
