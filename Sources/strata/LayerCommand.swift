import ArgumentParser
import StrataCore
import StrataServer

struct LayerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layer", abstract: "Freeze a volume's top as a read-only layer, and list its layers.",
        discussion: """
            A layer is a snapshot: `layer push` freezes the volume as it is now (named NAME, else the \
            next layerN) and the volume goes on as the writable top over it.
            """,
        subcommands: [LayerPush.self, LayerList.self])
}

struct LayerPush: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push", abstract: "Freeze the volume's current top as a read-only layer; the volume stays writable.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var volume: String
    @Argument(help: "Layer name (default: the next layerN).") var name: String?

    func run() throws {
        guard case .created(let layer) = try self.options.execute(.pushLayer(volume: self.volume, name: self.name))
        else { return }
        print("pushed layer \(layer); \(self.volume) is the writable top")
    }
}

struct LayerList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the read-only layers a volume reads through, newest first, and its base files.")
    @OptionGroup var options: PoolOptions
    @Argument(help: "Volume name.") var volume: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard case .layers(let layers) = try self.options.execute(.volumeLayers(name: self.volume)) else { return }
        printLayers(layers.filter { $0.kind != "volume" }, json: self.json)
    }
}
