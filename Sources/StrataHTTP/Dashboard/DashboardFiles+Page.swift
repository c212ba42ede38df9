// The dashboard's HTML and CSS (see DashboardAsset.swift). Every figure the page shows carries
// a `data-bytes` (or `data-count`) attribute with the exact number, so tests read the DOM
// rather than parse formatted text.

/// The dashboard's file contents.
enum DashboardFiles {
    static let page = #"""
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Strata</title>
        <link rel="stylesheet" href="/dashboard.css">
        </head>
        <body>
        <header><h1>Strata</h1><span id="status" class="status">loading…</span></header>
        <main>
        <section id="pool-section">
          <h2>Pool</h2>
          <div class="figures">
            <div class="figure"><span class="label">capacity</span><span id="pool-capacity" class="value"></span></div>
            <div class="figure"><span class="label">used</span><span id="pool-used" class="value"></span></div>
            <div class="figure"><span class="label">free</span><span id="pool-free" class="value"></span></div>
            <div class="figure"><span class="label">metadata used</span><span id="pool-metadata" class="value"></span></div>
            <div class="figure"><span class="label">volumes</span><span id="pool-volumes" class="value"></span></div>
            <div class="figure"><span class="label">snapshots</span><span id="pool-snapshots" class="value"></span></div>
          </div>
          <svg id="space-bar" class="space-bar" viewBox="0 0 1000 40" preserveAspectRatio="none" role="img" aria-label="pool space by volume"></svg>
          <div id="space-legend" class="legend"></div>
        </section>
        <section id="trees-section">
          <h2>Volumes, snapshots and clones</h2>
          <div id="trees"></div>
        </section>
        <section id="io-section">
          <h2>I/O (last 2 minutes)</h2>
          <div id="graphs" class="graphs"></div>
        </section>
        <section id="connections-section">
          <h2>Connections</h2>
          <table id="connections"><thead><tr><th>protocol</th><th>client</th><th>export</th></tr></thead><tbody></tbody></table>
        </section>
        <section id="replication-section">
          <h2>Replication</h2>
          <table id="replication"><thead><tr><th>volume</th><th>peer</th><th>state</th><th>last replicated</th><th>lag</th><th>sent</th></tr></thead><tbody></tbody></table>
        </section>
        </main>
        <script src="/dashboard.js"></script>
        </body>
        </html>
        """#

    static let style = #"""
        :root { --fg: #1d232a; --muted: #5b6672; --line: #c9d1d9; --bg: #f6f8fa; --card: #fff; --accent: #1f6feb; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
        header { display: flex; align-items: baseline; gap: 1em; padding: 0.6em 1.2em; background: #24292f; color: #fff; }
        header h1 { margin: 0; font-size: 1.3em; }
        .status { color: #c9d1d9; font-size: 0.9em; }
        .status.error { color: #ff7b72; }
        main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1em; padding: 1em; }
        section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 0.8em 1em; }
        h2 { margin: 0 0 0.6em; font-size: 1.05em; }
        .figures { display: grid; grid-template-columns: repeat(3, 1fr); gap: 0.4em 1em; margin-bottom: 0.8em; }
        .figure .label { display: block; color: var(--muted); font-size: 0.85em; }
        .figure .value { font-size: 1.25em; font-weight: 600; }
        .space-bar { width: 100%; height: 28px; border: 1px solid var(--line); border-radius: 3px; background: #eaeef2; }
        .legend { display: flex; flex-wrap: wrap; gap: 0.3em 1em; margin-top: 0.4em; font-size: 0.9em; }
        .swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; border-radius: 2px; vertical-align: -1px; }
        .tree, .tree ul { list-style: none; margin: 0; padding-left: 1.2em; }
        .tree { padding-left: 0; margin-bottom: 0.8em; }
        .tree li { position: relative; padding: 0.15em 0 0.15em 0.8em; }
        .tree ul > li::before { content: ""; position: absolute; left: -0.6em; top: 0; bottom: 0; border-left: 1px solid var(--line); }
        .tree ul > li:last-child::before { bottom: auto; height: 0.95em; }
        .tree ul > li::after { content: ""; position: absolute; left: -0.6em; top: 0.95em; width: 1.1em; border-top: 1px solid var(--line); }
        .node { display: inline-flex; gap: 0.6em; align-items: baseline; padding: 0.1em 0.5em; border-radius: 4px; border: 1px solid var(--line); }
        .node.volume { background: #ddf4ff; border-color: #54aeff; }
        .node.clone { background: #fbefff; border-color: #c297ff; }
        .node.snapshot { background: #fff8c5; border-color: #d4a72c; }
        .node .name { font-weight: 600; }
        .node .detail { color: var(--muted); font-size: 0.9em; }
        .graphs { display: grid; gap: 0.8em; }
        .graph h3 { margin: 0 0 0.2em; font-size: 0.95em; }
        .graph canvas { width: 100%; height: 90px; border: 1px solid var(--line); border-radius: 3px; background: #fff; }
        .graph .now { color: var(--muted); font-size: 0.9em; }
        table { width: 100%; border-collapse: collapse; }
        th, td { text-align: left; padding: 0.25em 0.5em; border-bottom: 1px solid var(--line); }
        th { color: var(--muted); font-weight: 500; }
        td.empty { color: var(--muted); font-style: italic; }
        """#
}
