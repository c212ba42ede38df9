// `strata iscsi chap set|remove|list`: the CHAP secrets iSCSI logins must present. They live in
// the pool directory (iscsi-chap.json, mode 0600); a running daemon reads them at each login.

import ArgumentParser
import Foundation
import StrataCore
import StrataISCSI
import StrataServer

struct ISCSICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iscsi",
        abstract: "iSCSI settings: CHAP secrets.",
        discussion: """
            Every volume is the iSCSI target iqn.2026-11.org.strata:VOLUME (LUN 0) and every snapshot \
            the read-only target iqn.2026-11.org.strata:VOLUME:SNAPSHOT, on `strata serve --iscsi`.
            """,
        subcommands: [ChapCommand.self])
}

struct ChapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chap",
        abstract: "Set, remove or list CHAP secrets for iSCSI logins.",
        subcommands: [Set.self, Remove.self, List.self])

    /// A secret from --X or --X-file (the file keeps it out of `ps`), checked for length.
    static func secret(_ value: String?, file: String?, option: String) throws -> String? {
        var secret = value
        if let file {
            guard let data = FileManager.default.contents(atPath: file),
                let text = String(data: data, encoding: .utf8)
            else {
                throw ValidationError("cannot read --\(option)-file \(file); check the path and its permissions")
            }
            secret = text.trimmingCharacters(in: .newlines)
        }
        if let secret, !ChapSettings.secretLengths.contains(secret.utf8.count) {
            throw ValidationError(
                "--\(option) must be \(ChapSettings.secretLengths.lowerBound) to \(ChapSettings.secretLengths.upperBound) bytes (RFC 7143 §12.1.3 asks for at least 96 bits); it is \(secret.utf8.count)"
            )
        }
        return secret
    }

    /// Edits the settings under a lock on the settings file, so two edits cannot lose one another.
    static func edit(_ directory: String, _ change: (inout ChapSettings) throws -> Void) throws {
        guard FileManager.default.fileExists(atPath: directory + "/" + Pool.fileName) else {
            throw ValidationError("no pool at \(directory); create it with `strata pool init` or `strata serve`")
        }
        let lockPath = directory + "/" + ChapSettings.fileName + ".lock"
        let descriptor = open(lockPath, O_CREAT | O_RDWR, 0o600)
        guard descriptor >= 0 else { throw ValidationError("cannot open \(lockPath) (errno \(errno))") }
        defer { close(descriptor) }
        flock(descriptor, LOCK_EX)
        var settings = try failing { () throws(StrataError) in try ChapSettings.load(directory: directory) }
        try change(&settings)
        try failing { () throws(StrataError) in try settings.save(directory: directory) }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Require CHAP for a target (VOLUME or VOLUME@SNAPSHOT), or for every target.",
            discussion: """
                Without TARGET the secret applies to every target without one of its own, and to \
                discovery sessions. With --mutual-user and --mutual-secret the target also proves \
                itself to the initiator (mutual CHAP). Secrets are 12 to 255 bytes.
                """)
        @OptionGroup var options: PoolOptions
        @Argument(help: "VOLUME or VOLUME@SNAPSHOT; omit for every target.") var target: String?
        @Option(help: "The initiator's CHAP name.") var user: String
        @Option(help: "The initiator's CHAP secret.") var secret: String?
        @Option(name: .customLong("secret-file"), help: "Read the secret from this file.") var secretFile: String?
        @Option(name: .customLong("mutual-user"), help: "The target's CHAP name, for mutual CHAP.") var mutualUser: String?
        @Option(name: .customLong("mutual-secret"), help: "The target's CHAP secret.") var mutualSecret: String?
        @Option(name: .customLong("mutual-secret-file"), help: "Read the target's secret from this file.")
        var mutualSecretFile: String?

        func validate() throws {
            guard !self.user.isEmpty else { throw ValidationError("--user must not be empty") }
            if (self.secret == nil) == (self.secretFile == nil) {
                throw ValidationError("give the secret with exactly one of --secret and --secret-file")
            }
            let mutualSecretGiven = self.mutualSecret != nil || self.mutualSecretFile != nil
            if (self.mutualUser != nil) != mutualSecretGiven {
                throw ValidationError("mutual CHAP needs both --mutual-user and --mutual-secret (or --mutual-secret-file)")
            }
        }

        func run() throws {
            let secret = try ChapCommand.secret(self.secret, file: self.secretFile, option: "secret")!
            let mutual = try ChapCommand.secret(self.mutualSecret, file: self.mutualSecretFile, option: "mutual-secret")
            if let mutual, mutual == secret {
                throw ValidationError("the mutual secret must differ from the initiator's secret (RFC 7143 §12.1.3)")
            }
            if let target {
                try ChapCommand.requireObject(target, options: self.options)
            }
            let credential = ChapCredential(
                user: self.user, secret: secret, mutualUser: self.mutualUser, mutualSecret: mutual)
            try ChapCommand.edit(self.options.directory) { settings in
                if let target { settings.targets[target] = credential } else { settings.all = credential }
            }
            let scope = self.target.map { TargetNames.targetName(for: $0) } ?? "every target"
            print("CHAP\(mutual != nil ? " (mutual)" : "") required for \(scope)")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop requiring CHAP for a target, or remove the setting for every target.")
        @OptionGroup var options: PoolOptions
        @Argument(help: "VOLUME or VOLUME@SNAPSHOT; omit for the every-target setting.") var target: String?

        func run() throws {
            var removed = false
            try ChapCommand.edit(self.options.directory) { settings in
                if let target {
                    removed = settings.targets.removeValue(forKey: target) != nil
                } else {
                    removed = settings.all != nil
                    settings.all = nil
                }
            }
            let scope = self.target ?? "every target"
            guard removed else {
                printError("iscsi chap remove \(scope): no CHAP setting there; `strata iscsi chap list` shows them")
                throw ExitCode(1)
            }
            print("removed the CHAP setting for \(scope)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List CHAP settings (names only, never secrets).")
        @OptionGroup var options: PoolOptions
        @Flag(help: "Print JSON.") var json = false

        struct Row: Encodable {
            let target: String
            let user: String
            let mutualUser: String?
        }

        func run() throws {
            let settings = try failing { () throws(StrataError) in try ChapSettings.load(directory: self.options.directory) }
            var rows: [Row] = []
            if let all = settings.all { rows.append(Row(target: "*", user: all.user, mutualUser: all.mutualUser)) }
            for (target, credential) in settings.targets.sorted(by: { $0.key < $1.key }) {
                rows.append(Row(target: target, user: credential.user, mutualUser: credential.mutualUser))
            }
            if self.json { return printJSON(rows) }
            printTable(["TARGET", "USER", "MUTUAL USER"], rows.map { [$0.target, $0.user, $0.mutualUser ?? "-"] })
        }
    }

    /// Refuses a target that names no volume or snapshot of the pool.
    static func requireObject(_ object: String, options: PoolOptions) throws {
        let parts = object.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
        let exists: Bool
        if parts.count == 2 {
            guard case .snapshots(let snapshots) = try options.execute(.listSnapshots(volume: parts[0])) else { return }
            exists = snapshots.contains { $0.name == parts[1] }
        } else {
            guard case .volumes(let volumes) = try options.execute(.listVolumes) else { return }
            exists = volumes.contains { $0.name == object }
        }
        guard exists else {
            printError("iscsi chap set \(object): no such volume or snapshot; `strata volume list` shows them")
            throw ExitCode(1)
        }
    }
}
