//! Prints what `wasi:config/store` gives it: `get` of each key named in argv (or `(none)`), then
//! every entry of `get-all`, sorted, one `key=value` line each (newlines in a value shown as
//! `\n`). Built for wasm32-wasip1 and wrapped into a component by the harness, like `tcp`.

wit_bindgen::generate!({
    inline: r"
        package wasmtest:config;

        world config-guest {
            import wasi:config/store@0.2.0-rc.1;
        }

        package wasi:config@0.2.0-rc.1 {
            interface store {
                variant error { upstream(string), io(string) }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }
        }
    ",
    world: "wasmtest:config/config-guest",
    generate_all,
});

use wasi::config::store;

fn shown(v: &str) -> String {
    v.replace('\n', "\\n")
}

fn main() {
    for key in std::env::args().skip(1) {
        match store::get(&key) {
            Ok(Some(v)) => println!("get {key}: {}", shown(&v)),
            Ok(None) => println!("get {key}: (none)"),
            Err(e) => println!("get {key}: error {e:?}"),
        }
    }
    match store::get_all() {
        Ok(mut all) => {
            all.sort();
            println!("entries: {}", all.len());
            for (k, v) in all {
                println!("entry {k}={}", shown(&v));
            }
        }
        Err(e) => println!("get-all: error {e:?}"),
    }
}
