// `strata mirror`: mirrors that split and re-join (docs/MIRROR.md). Every verb goes to the
// daemon, which holds the legs open; parsing and printing only.

import ArgumentParser
import Foundation
import StrataCore
import StrataMirror
import StrataServer

struct MirrorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror",
        abstract: "Mirror a volume to a second pool; split the mirror as a point-in-time copy and re-join it.",
        discussion: """
            A connected leg holds every acknowledged write of the volume; a detached leg is a copy \
            of one instant while the volume tracks what changes; attaching copies only the chunks \
            changed on either side since the split. See docs/MIRROR.md.
            """,
        subcommands: [Add.self, Detach.self, Attach.self, Status.self, Remove.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a mirror leg (a second pool on this host, or another daemon) and start its full copy.",
            discussion: """
                With --to-pool DIR, DIR must hold an empty pool (`strata pool init`), typically on \
                another disk. With --to HOST:PORT, the leg is on another Strata daemon's replication \
                port (`strata serve --replication HOST:PORT --replication-secret-file F` there; give the \
                same secret with --secret-file): its copy is a volume of the same name on that daemon, \
                exported read-only while the mirror owns it. The leg copies the volume (state \
                syncing) while I/O to it goes on, then is connected: every write, trim and zero is \
                on the leg before it is acknowledged, and a flush is durable on both.
                """)
        @OptionGroup var options: PoolOptions
        @Argument(help: "Volume to mirror.") var volume: String
        @Option(name: .customLong("to-pool"), help: "Directory of the empty pool that holds the leg.")
        var toPool: String?
        @Option(name: .customLong("to"), help: "HOST:PORT of another daemon's replication port that holds the leg.")
        var to: String?
        @Option(
            name: .customLong("secret-file"),
            help: "File with the leg daemon's replication secret (needed with --to).")
        var secretFile: String?
        @Option(help: "The leg's name (default: leg1, leg2, ...).") var name: String?
        @Option(help: "Bound on the copy's rate, bytes per second (K, M, G suffixes), such as 100M.")
        var rate: String?
        @Option(help: "How long a leg may take to answer before it is degraded: seconds, or with an s suffix.")
        var timeout: String = "5s"
        @Option(
            name: .customLong("auto-resync"),
            help: "Resync a degraded leg by itself when it is usable again: on or off.")
        var autoResync: String = "on"
        @Flag(help: "Wait until the leg is connected, drawing the copy's progress.") var wait = false

        func validate() throws {
            guard (self.toPool == nil) != (self.to == nil) else {
                throw ValidationError("give one of --to-pool DIR (a pool on this host) or --to HOST:PORT (another daemon)")
            }
            if self.secretFile != nil, self.to == nil {
                throw ValidationError("--secret-file goes with --to HOST:PORT")
            }
            if let rate { _ = try parseSize(rate, option: "--rate") }
            guard parseDuration(self.timeout) != nil else {
                throw ValidationError("invalid --timeout '\(self.timeout)'; use seconds, such as 5 or 5s")
            }
            guard ["on", "off"].contains(self.autoResync) else {
                throw ValidationError("invalid --auto-resync '\(self.autoResync)'; use on or off")
            }
        }

        func run() throws {
            let rate = try self.rate.map { try parseSize($0, option: "--rate") }
            let timeoutMillis = UInt64(parseDuration(self.timeout)! * 1000)
            let request: MirrorRequest
            if let to = self.to {
                request = .addRemote(
                    volume: self.volume, address: to, secretFile: try self.secretPath(), leg: self.name, rate: rate,
                    autoResync: self.autoResync == "on", timeoutMillis: timeoutMillis)
            } else {
                request = .add(
                    volume: self.volume, poolDirectory: URL(fileURLWithPath: self.toPool ?? "").standardizedFileURL.path,
                    leg: self.name, rate: rate, autoResync: self.autoResync == "on", timeoutMillis: timeoutMillis)
            }
            let legs = try MirrorCommand.execute(self.options, .mirror(request))
            for leg in legs { print("mirroring \(leg.volume) to \(leg.location) as leg \(leg.leg): \(leg.state.rawValue)") }
            if self.wait, let leg = legs.first { try MirrorCommand.waitConnected(self.options, leg) }
        }

        /// The secret file as an absolute path (the daemon reads it, from its own directory).
        func secretPath() throws -> String {
            guard let file = self.secretFile else {
                throw ValidationError("--to needs --secret-file F: the file with the leg daemon's replication secret")
            }
            return URL(fileURLWithPath: file).standardizedFileURL.path
        }
    }

    struct Detach: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Split a connected leg off as a point-in-time copy; the volume tracks what changes.",
            discussion: """
                The copy holds every write acknowledged before the command started and none issued \
                after it returned. A local leg's copy stays in the leg's pool under the volume's \
                name and is exported as VOLUME@mirror-LEG (and as NAME with --as); a remote leg's \
                copy is a volume on the leg daemon, renamed NAME with --as. Re-join it with \
                `strata mirror attach`.
                """)
        @OptionGroup var options: PoolOptions
        @Argument(help: "Mirrored volume.") var volume: String
        @Argument(help: "The leg (needed when the volume has several).") var leg: String?
        @Option(name: .customLong("as"), help: "A name for the detached copy.") var name: String?
        @Flag(help: "Let the detached copy be written (its writes are discarded at attach).") var writable = false

        func run() throws {
            let legs = try MirrorCommand.execute(
                self.options, .mirror(.detach(volume: self.volume, leg: self.leg, as: self.name, writable: self.writable)))
            for leg in legs {
                print("detached leg \(leg.leg) of \(leg.volume) at \(leg.splitAt ?? "?") (\(leg.location))")
            }
        }
    }

    struct Attach: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-join a detached or degraded leg, copying only the chunks changed since the split.",
            discussion: """
                Chunks the volume changed and chunks a writable detached copy changed are copied from \
                the volume (the volume wins); then the leg is connected. --full copies everything.
                """)
        @OptionGroup var options: PoolOptions
        @Argument(help: "Mirrored volume.") var volume: String
        @Argument(help: "The leg (needed when the volume has several).") var leg: String?
        @Flag(help: "Copy the whole volume instead of the changes.") var full = false
        @Option(help: "A new bound on the leg's copy rate, bytes per second (K, M, G suffixes), such as 100M.")
        var rate: String?
        @Flag(help: "Wait until the leg is connected, drawing the copy's progress.") var wait = false

        func validate() throws {
            if let rate { _ = try parseSize(rate, option: "--rate") }
        }

        func run() throws {
            let rate = try self.rate.map { try parseSize($0, option: "--rate") }
            let legs = try MirrorCommand.execute(
                self.options, .mirror(.attach(volume: self.volume, leg: self.leg, full: self.full, rate: rate)))
            for leg in legs {
                print("attaching leg \(leg.leg) of \(leg.volume): \(SizeParser.format(leg.bytesToResync)) to copy")
            }
            if self.wait, let leg = legs.first { try MirrorCommand.waitConnected(self.options, leg) }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Each leg: state, bytes to resync, rate, last error and the time of the split.")
        @OptionGroup var options: PoolOptions
        @Argument(help: "Only this volume's legs.") var volume: String?
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "Print the status again every second until interrupted.") var watch = false

        func run() throws {
            while true {
                let legs = try MirrorCommand.execute(self.options, .mirror(.status(volume: self.volume)))
                if self.json {
                    printJSON(legs)
                } else {
                    printTable(
                        ["VOLUME", "LEG", "STATE", "TO RESYNC", "RESYNCED", "RATE", "COPY TIME", "SPLIT", "LOCATION", "LAST ERROR"],
                        legs.map { leg in
                            [
                                leg.volume, leg.leg, leg.state.rawValue, SizeParser.format(leg.bytesToResync),
                                SizeParser.format(leg.bytesResynced), "\(SizeParser.format(leg.rateBytesPerSecond))/s",
                                leg.copySeconds.map { String(format: "%.3f s", $0) } ?? "-",
                                leg.splitAt ?? "-", leg.location, leg.lastError ?? "-",
                            ]
                        })
                }
                guard self.watch else { return }
                sleep(1)
                print("")
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop mirroring; the leg's copy stays in its pool as an ordinary volume.")
        @OptionGroup var options: PoolOptions
        @Argument(help: "Mirrored volume.") var volume: String
        @Argument(help: "The leg (default: every leg of the volume).") var leg: String?

        func run() throws {
            let legs = try MirrorCommand.execute(self.options, .mirror(.remove(volume: self.volume, leg: self.leg)))
            for leg in legs { print("removed leg \(leg.leg) of \(leg.volume) (\(leg.location))") }
        }
    }

    static func execute(_ options: PoolOptions, _ request: ControlRequest) throws -> [MirrorLegStatus] {
        guard case .mirror(let legs) = try options.execute(request) else { return [] }
        return legs
    }

    /// Polls the leg until it is connected (drawing the copy), failing if it goes degraded with
    /// auto-resync off (with it on, the leg comes back by itself) or is detached meanwhile.
    static func waitConnected(_ options: PoolOptions, _ first: MirrorLegStatus) throws {
        var bar: Progress?
        while true {
            let legs = try Self.execute(options, .mirror(.status(volume: first.volume)))
            guard let leg = legs.first(where: { $0.leg == first.leg }) else { return }
            switch leg.state {
            case .connected:
                bar?.finish()
                print("leg \(leg.leg) of \(leg.volume) connected (\(SizeParser.format(leg.bytesResynced)) copied)")
                return
            case .degraded where leg.autoResync:
                // Auto-resync brings it back by itself once the leg answers again.
                usleep(200_000)
            case .degraded, .detached:
                bar?.finish()
                printError("mirror \(leg.volume) leg \(leg.leg): \(leg.state.rawValue) (\(leg.lastError ?? "no error recorded"))")
                throw ExitCode(1)
            case .syncing, .resyncing:
                let total = leg.bytesResynced + leg.bytesToResync
                if total > 0 {
                    if bar?.total != total { bar = Progress(total: total, label: "mirror \(leg.volume)") }
                    bar?.update(leg.bytesResynced, force: true)
                }
                usleep(200_000)
            }
        }
    }
}
