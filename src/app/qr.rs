//! QR codes of setup codes: a PNG for pages and replies, text for a terminal. The code holds the bare setup
//! code, as OpenClaw's does (error correction M, a 4-module margin, 6 pixels a module).

use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};

const MARGIN: usize = 4;
const SCALE: usize = 6;

/// `None` past what a QR code holds (2,331 bytes at level M); a setup code's URL is capped well below.
fn code_of(text: &str) -> Option<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()
}

/// The QR code of `text` as a greyscale PNG.
pub fn png(text: &str) -> Option<Vec<u8>> {
    let code = code_of(text)?;
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
    let mut writer = encoder.write_header().ok()?;
    writer.write_image_data(&pixels).ok()?;
    writer.finish().ok()?;
    Some(out)
}

/// The QR code of `text` for a terminal, two modules a character, drawn light on dark (a dark terminal's
/// background is the code's dark modules).
pub fn terminal(text: &str) -> Option<String> {
    let code = code_of(text)?;
    Some(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn too_much_for_a_qr_code_is_none_not_a_panic() {
        assert!(super::png(&"x".repeat(3000)).is_none());
        assert!(super::terminal(&"x".repeat(3000)).is_none());
        assert!(super::png("short").is_some());
    }
}
