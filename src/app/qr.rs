//! QR codes of setup codes: a PNG for pages and replies, text for a terminal. The code holds the bare setup
//! code, as OpenClaw's does (error correction M, a 4-module margin, 6 pixels a module).

use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};

const MARGIN: usize = 4;
const SCALE: usize = 6;

fn code_of(text: &str) -> QrCode {
    // A setup code is a few hundred bytes at most; version 40 at level M holds 2,331.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).expect("a setup code fits a QR code")
}

/// The QR code of `text` as a greyscale PNG.
pub fn png(text: &str) -> Vec<u8> {
    let code = code_of(text);
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * MARGIN) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (index % modules + MARGIN, index / modules + MARGIN);
        for row in y * SCALE..(y + 1) * SCALE {
            pixels[row * side + x * SCALE..row * side + (x + 1) * SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().expect("writing a PNG to memory");
    writer.write_image_data(&pixels).expect("writing a PNG to memory");
    writer.finish().expect("writing a PNG to memory");
    out
}

/// The QR code of `text` for a terminal: two modules a character, dark on light whatever the theme.
pub fn terminal(text: &str) -> String {
    code_of(text).render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build()
}
