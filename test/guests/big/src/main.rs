//! `big`: a small text-processing toolbox, one subcommand per library, used by `make bench` as
//! the large module (compile time grows with code size). Without arguments it prints one line
//! and exits at once, so a run measures the start of a big module, not its work.
//!
//! ```text
//! big                          prints "big: ready (13 tools)"
//! big regex PATTERN TEXT       every match of PATTERN in TEXT
//! big json                     stdin JSON, pretty-printed, with a count of its values
//! big toml                     stdin TOML as JSON
//! big markdown                 stdin Markdown as HTML
//! big highlight EXT            stdin source code as HTML highlighted for the syntax of EXT
//! big png W H                  a W×H gradient PNG, then decoded again; prints its sizes
//! big image                    stdin image (png, jpeg, gif, bmp): format and dimensions
//! big gzip                     stdin compressed and decompressed; prints both sizes
//! big date RFC3339             the date parsed, with its weekday and the time until now
//! big url URL                  the URL's parts
//! big sha256                   stdin's SHA-256
//! big base64                   stdin in base64
//! big csv                      stdin CSV: rows, columns and the sum of numeric cells
//! big template TEMPLATE        stdin JSON rendered through a Handlebars TEMPLATE
//! big xml                      stdin JSON as XML, parsed back
//! big yaml                     stdin YAML as JSON
//! big ron                      stdin JSON as RON, parsed back
//! big brotli                   stdin compressed and decompressed with brotli; prints both sizes
//! big zstd                     stdin (zstd frames) decompressed; prints the size
//! big xz                       stdin compressed and decompressed with LZMA; prints both sizes
//! big factorial N              N! exactly
//! big nfc                      stdin normalized to NFC and NFD; prints the lengths
//! ```

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const TOOLS: &[&str] = &[
    "regex", "json", "toml", "markdown", "highlight", "png", "image", "gzip", "date", "url",
    "sha256", "base64", "csv", "template", "xml", "yaml", "ron", "brotli", "zstd", "xz",
    "factorial", "nfc",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("big: {e}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn stdin_bytes() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

fn stdin_text() -> Result<String> {
    Ok(String::from_utf8(stdin_bytes()?)?)
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("missing {what}").into())
}

fn run(args: &[String]) -> Result<()> {
    let Some(tool) = args.first() else {
        println!("big: ready ({} tools)", TOOLS.len());
        return Ok(());
    };
    match tool.as_str() {
        "regex" => regex_tool(arg(args, 1, "pattern")?, arg(args, 2, "text")?),
        "json" => json_tool(&stdin_text()?),
        "toml" => toml_tool(&stdin_text()?),
        "markdown" => markdown_tool(&stdin_text()?),
        "highlight" => highlight_tool(arg(args, 1, "extension")?, &stdin_text()?),
        "png" => png_tool(arg(args, 1, "width")?.parse()?, arg(args, 2, "height")?.parse()?),
        "image" => image_tool(&stdin_bytes()?),
        "gzip" => gzip_tool(&stdin_bytes()?),
        "date" => date_tool(arg(args, 1, "date")?),
        "url" => url_tool(arg(args, 1, "url")?),
        "sha256" => sha_tool(&stdin_bytes()?),
        "base64" => base64_tool(&stdin_bytes()?),
        "csv" => csv_tool(&stdin_text()?),
        "template" => template_tool(arg(args, 1, "template")?, &stdin_text()?),
        "xml" => xml_tool(&stdin_text()?),
        "yaml" => yaml_tool(&stdin_text()?),
        "ron" => ron_tool(&stdin_text()?),
        "brotli" => brotli_tool(&stdin_bytes()?),
        "zstd" => zstd_tool(&stdin_bytes()?),
        "xz" => xz_tool(&stdin_bytes()?),
        "factorial" => factorial_tool(arg(args, 1, "n")?.parse()?),
        "nfc" => nfc_tool(&stdin_text()?),
        other => Err(format!("unknown tool {other:?} (tools: {})", TOOLS.join(", ")).into()),
    }
}

fn regex_tool(pattern: &str, text: &str) -> Result<()> {
    let re = regex::Regex::new(pattern)?;
    for m in re.find_iter(text) {
        println!("{}..{}: {}", m.start(), m.end(), m.as_str());
    }
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Census {
    nulls: usize,
    bools: usize,
    numbers: usize,
    strings: usize,
    arrays: usize,
    objects: usize,
}

impl Census {
    fn count(&mut self, v: &serde_json::Value) {
        use serde_json::Value::*;
        match v {
            Null => self.nulls += 1,
            Bool(_) => self.bools += 1,
            Number(_) => self.numbers += 1,
            String(_) => self.strings += 1,
            Array(a) => {
                self.arrays += 1;
                a.iter().for_each(|x| self.count(x));
            }
            Object(o) => {
                self.objects += 1;
                o.values().for_each(|x| self.count(x));
            }
        }
    }
}

fn json_tool(text: &str) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let mut census = Census::default();
    census.count(&value);
    println!("{}", serde_json::to_string_pretty(&value)?);
    println!("{}", serde_json::to_string(&census)?);
    Ok(())
}

fn toml_tool(text: &str) -> Result<()> {
    let value: toml::Value = toml::from_str(text)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn markdown_tool(text: &str) -> Result<()> {
    let parser = pulldown_cmark::Parser::new_ext(text, pulldown_cmark::Options::all());
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    print!("{html}");
    Ok(())
}

fn highlight_tool(ext: &str, code: &str) -> Result<()> {
    use syntect::highlighting::ThemeSet;
    use syntect::html::highlighted_html_for_string;
    use syntect::parsing::SyntaxSet;
    let syntaxes = SyntaxSet::load_defaults_newlines();
    let themes = ThemeSet::load_defaults();
    let syntax = syntaxes
        .find_syntax_by_extension(ext)
        .unwrap_or_else(|| syntaxes.find_syntax_plain_text());
    let theme = themes
        .themes
        .get("InspiredGitHub")
        .ok_or("theme InspiredGitHub missing")?;
    print!("{}", highlighted_html_for_string(code, &syntaxes, syntax, theme)?);
    Ok(())
}

fn png_tool(width: u32, height: u32) -> Result<()> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, 128])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    let bytes = png.into_inner();
    let back = image::load_from_memory(&bytes)?;
    println!("png {} bytes, decoded {}x{}", bytes.len(), back.width(), back.height());
    Ok(())
}

fn image_tool(bytes: &[u8]) -> Result<()> {
    let format = image::guess_format(bytes)?;
    let img = image::load_from_memory_with_format(bytes, format)?;
    println!("{format:?} {}x{} {:?}", img.width(), img.height(), img.color());
    Ok(())
}

fn gzip_tool(bytes: &[u8]) -> Result<()> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    let packed = enc.finish()?;
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut unpacked)?;
    if unpacked != bytes {
        return Err("gzip round trip differs".into());
    }
    println!("{} bytes -> {} bytes gzip", bytes.len(), packed.len());
    Ok(())
}

fn date_tool(text: &str) -> Result<()> {
    use chrono::{DateTime, Datelike, Utc};
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc);
    let until = t.signed_duration_since(Utc::now());
    println!(
        "{} is a {:?} (day {} of the year), {} days from now",
        t.to_rfc2822(),
        t.weekday(),
        t.ordinal(),
        until.num_days()
    );
    Ok(())
}

fn url_tool(text: &str) -> Result<()> {
    let u = url::Url::parse(text)?;
    println!("scheme {}", u.scheme());
    println!("host {}", u.host_str().unwrap_or(""));
    println!("port {}", u.port_or_known_default().map(|p| p.to_string()).unwrap_or_default());
    println!("path {}", u.path());
    for (k, v) in u.query_pairs() {
        println!("query {k}={v}");
    }
    Ok(())
}

fn sha_tool(bytes: &[u8]) -> Result<()> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    Ok(())
}

fn base64_tool(bytes: &[u8]) -> Result<()> {
    use base64::Engine as _;
    println!("{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    Ok(())
}

fn csv_tool(text: &str) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    let (mut rows, mut cols, mut sum) = (0usize, 0usize, 0f64);
    for record in reader.records() {
        let record = record?;
        rows += 1;
        cols = cols.max(record.len());
        sum += record.iter().filter_map(|c| c.trim().parse::<f64>().ok()).sum::<f64>();
    }
    println!("{rows} rows, {cols} columns, numeric sum {sum}");
    Ok(())
}

fn template_tool(template: &str, json: &str) -> Result<()> {
    let data: serde_json::Value = serde_json::from_str(json)?;
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_template_string("t", template)?;
    println!("{}", hb.render("t", &data)?);
    Ok(())
}

/// A document for the XML and RON round trips.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "doc")]
struct Doc {
    title: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    count: i64,
}

fn xml_tool(json: &str) -> Result<()> {
    let doc: Doc = serde_json::from_str(json)?;
    let xml = quick_xml::se::to_string(&doc)?;
    let back: Doc = quick_xml::de::from_str(&xml)?;
    if back != doc {
        return Err("xml round trip differs".into());
    }
    println!("{xml}");
    Ok(())
}

fn yaml_tool(text: &str) -> Result<()> {
    let value: serde_yaml::Value = serde_yaml::from_str(text)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn ron_tool(json: &str) -> Result<()> {
    let doc: Doc = serde_json::from_str(json)?;
    let text = ron::ser::to_string_pretty(&doc, ron::ser::PrettyConfig::default())?;
    let back: Doc = ron::from_str(&text)?;
    if back != doc {
        return Err("ron round trip differs".into());
    }
    println!("{text}");
    Ok(())
}

fn brotli_tool(bytes: &[u8]) -> Result<()> {
    let mut packed = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut packed, 4096, 9, 22);
        w.write_all(bytes)?;
    }
    let mut unpacked = Vec::new();
    brotli::Decompressor::new(&packed[..], 4096).read_to_end(&mut unpacked)?;
    if unpacked != bytes {
        return Err("brotli round trip differs".into());
    }
    println!("{} bytes -> {} bytes brotli", bytes.len(), packed.len());
    Ok(())
}

fn zstd_tool(bytes: &[u8]) -> Result<()> {
    let mut out = Vec::new();
    ruzstd::StreamingDecoder::new(bytes)
        .map_err(|e| format!("zstd: {e}"))?
        .read_to_end(&mut out)?;
    println!("{} bytes zstd -> {} bytes", bytes.len(), out.len());
    Ok(())
}

fn xz_tool(bytes: &[u8]) -> Result<()> {
    let mut packed = Vec::new();
    lzma_rs::xz_compress(&mut &bytes[..], &mut packed)?;
    let mut unpacked = Vec::new();
    lzma_rs::xz_decompress(&mut &packed[..], &mut unpacked).map_err(|e| format!("xz: {e:?}"))?;
    if unpacked != bytes {
        return Err("xz round trip differs".into());
    }
    println!("{} bytes -> {} bytes xz", bytes.len(), packed.len());
    Ok(())
}

fn factorial_tool(n: u32) -> Result<()> {
    let f = (1..=n).fold(num_bigint::BigUint::from(1u32), |acc, k| acc * k);
    println!("{f}");
    Ok(())
}

fn nfc_tool(text: &str) -> Result<()> {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = text.nfc().collect();
    let nfd: String = text.nfd().collect();
    println!("{} chars, NFC {} chars, NFD {} chars", text.chars().count(), nfc.chars().count(), nfd.chars().count());
    Ok(())
}
