#!/usr/bin/env bash
# Man pages and shell completion: docs/man holds exactly what scripts/gen-man.py makes from the
# built binary's command definitions (so a new option or a changed help text fails here until
# the pages are regenerated and committed), every page renders with groff without a warning,
# and the bash, zsh and fish completion scripts from `strata --generate-completion-script` load
# in their shells and complete subcommands.
source "$(dirname "$0")/../lib.sh"
requires man groff zsh fish /usr/bin/python3

/usr/bin/python3 "$ROOT/scripts/gen-man.py" "$STRATA" "$WORKDIR/man" >/dev/null || fail "gen-man.py"
diff -r "$ROOT/docs/man" "$WORKDIR/man" >"$WORKDIR/man.diff" \
    || fail "docs/man is stale; run scripts/gen-man.py .build/debug/strata and commit: $(head -20 "$WORKDIR/man.diff")"
pages=0
for page in "$ROOT"/docs/man/*.1; do
    warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "$(basename "$page") renders with warnings: $warnings"
    MANWIDTH=80 man -l "$page" 2>/dev/null | grep -q "^NAME" || fail "$(basename "$page") has no NAME section"
    pages=$((pages + 1))
done
[ "$pages" -ge 40 ] || fail "only $pages man pages"
grep -q "strata-volume-flatten" "$ROOT/docs/man/strata-volume.1" || fail "strata-volume(1) does not list flatten"

"$STRATA" --generate-completion-script bash >"$WORKDIR/strata.bash"
"$STRATA" --generate-completion-script zsh >"$WORKDIR/_strata"
"$STRATA" --generate-completion-script fish >"$WORKDIR/strata.fish"
# bash: the script loads, registers a completion for strata, and completes `strata vol`.
out=$(bash -c "source '$WORKDIR/strata.bash' && complete -p strata && COMP_WORDS=(strata vol) COMP_CWORD=1 COMP_LINE='strata vol' COMP_POINT=10 && \$(complete -p strata | sed -n 's/.*-F \([^ ]*\).*/\1/p') strata vol strata && printf '%s\n' \"\${COMPREPLY[@]}\"" 2>&1) \
    || fail "bash completion: $out"
echo "$out" | grep -qx "volume" || fail "bash completion of 'strata vol' gave: $out"
# zsh: the script parses and defines its completion function.
zsh -n "$WORKDIR/_strata" || fail "zsh completion does not parse"
out=$(zsh -f -c "autoload -U compinit && compinit -u -D && source '$WORKDIR/_strata' && whence -w _strata" 2>&1) \
    || fail "zsh completion does not load: $out"
echo "$out" | grep -q "_strata: function" || fail "zsh completion defines no _strata function: $out"
# fish: the script parses and completes `strata vol`.
fish -n "$WORKDIR/strata.fish" || fail "fish completion does not parse"
out=$(fish -c "source '$WORKDIR/strata.fish'; complete -C 'strata vol'" 2>&1) || fail "fish completion: $out"
echo "$out" | grep -q "^volume" || fail "fish completion of 'strata vol' gave: $out"
echo "REPORT $pages man pages current and clean; bash, zsh and fish completion load and complete"
