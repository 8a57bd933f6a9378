# Helpers the benchmark scripts share; `. bench/lib.sh` from the project root.

now() { date +%s.%N; }
secs() { echo "$1 $2" | awk '{ printf "%.2f", $2 - $1 }'; }
size() { du -sb "$1" | cut -f1; }

# serve DIR NAME LOG: serves DIR on a free loopback port as a plain web server would (python's
# threaded http.server), stopped when the script exits; sets URL to http://…/NAME.
serve() {
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 "$port" --directory "$1" > "$3" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    sleep 1
    URL="http://127.0.0.1:$port/$2"
}

# build_publisher: builds gah-publish (release) and sets BIN to it.
build_publisher() {
    cargo build --release -q -p gah-publish
    BIN=$PWD/target/release/gah-publish
}
