//! `Event` builders for scalars, images, text and the restart marker.
//!
//! Built on tensorboard-proto's message types. tensorboard-rs's builders are not used: its
//! image builder swaps height and width and only accepts RGB (images are PNG-encoded here
//! with the `png` crate, greyscale kept as greyscale), and its scalar builder is the four
//! lines of [`scalar`], not worth a dependency that pulls in an image library.

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::plugin_text::TextPluginData;
use tensorboard_proto::summary::{
    Summary, Summary_Image, Summary_Value, SummaryMetadata, SummaryMetadata_PluginData,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;

use super::TbError;
use super::writer::now_secs;

/// An event at `step` carrying `summary`, stamped with the current time.
pub fn summary_event(step: u64, summary: Summary) -> Event {
    let mut ev = Event::new();
    ev.set_wall_time(now_secs());
    ev.set_step(step as i64);
    ev.set_summary(summary);
    ev
}

/// A summary holding one value.
pub fn one_value(value: Summary_Value) -> Summary {
    let mut s = Summary::new();
    s.set_value(RepeatedField::from_vec(vec![value]));
    s
}

/// Metadata naming the TensorBoard plugin that owns a value.
pub fn plugin_metadata(plugin: &str, content: Vec<u8>) -> SummaryMetadata {
    let mut pd = SummaryMetadata_PluginData::new();
    pd.set_plugin_name(plugin.into());
    pd.set_content(content);
    let mut md = SummaryMetadata::new();
    md.set_plugin_data(pd);
    md
}

/// A scalar point; TensorBoard stores scalars as 32-bit floats.
pub fn scalar(step: u64, tag: &str, value: f64) -> Event {
    let mut v = Summary_Value::new();
    v.set_tag(tag.into());
    v.set_simple_value(value as f32);
    summary_event(step, one_value(v))
}

/// A PNG-encoded image from row-major HWC bytes; `channels` 1 (grey), 3 (RGB) or 4 (RGBA).
pub fn image(
    step: u64,
    tag: &str,
    width: u32,
    height: u32,
    channels: u8,
    pixels: &[u8],
) -> Result<Event, TbError> {
    let bad = |reason: String| TbError::Image {
        tag: tag.into(),
        reason,
    };
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(bad(format!("{c} channels; expected 1, 3 or 4"))),
    };
    if width == 0 || height == 0 {
        return Err(bad(format!("empty image {width}x{height}")));
    }
    let expected = width as u64 * height as u64 * channels as u64;
    if pixels.len() as u64 != expected {
        return Err(bad(format!(
            "{} bytes for {width}x{height}x{channels} (expected {expected})",
            pixels.len()
        )));
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let encode = |e: png::EncodingError| bad(format!("PNG encoding: {e}"));
        let mut w = enc.write_header().map_err(encode)?;
        w.write_image_data(pixels).map_err(encode)?;
        w.finish().map_err(encode)?;
    }
    let mut img = Summary_Image::new();
    img.set_height(height as i32);
    img.set_width(width as i32);
    img.set_colorspace(channels as i32);
    img.set_encoded_image_string(png_bytes);
    let mut v = Summary_Value::new();
    v.set_tag(tag.into());
    v.set_image(img);
    Ok(summary_event(step, one_value(v)))
}

/// Markdown text for the text plugin: a scalar `DT_STRING` tensor tagged `plugin_name: "text"`.
pub fn text(step: u64, tag: &str, text: &str) -> Result<Event, TbError> {
    let content = TextPluginData::new().write_to_bytes()?;
    let mut t = TensorProto::new();
    t.set_dtype(DataType::DT_STRING);
    t.set_tensor_shape(TensorShapeProto::new());
    t.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));
    let mut v = Summary_Value::new();
    v.set_tag(tag.into());
    v.set_metadata(plugin_metadata("text", content));
    v.set_tensor(t);
    Ok(summary_event(step, one_value(v)))
}

/// `SessionLog{START}` at `step`: when TensorBoard is already showing a run that is
/// resumed, it drops the points it holds at `step` and later (left by the killed attempt).
pub fn session_start(step: u64) -> Event {
    let mut log = SessionLog::new();
    log.set_status(SessionLog_SessionStatus::START);
    let mut ev = Event::new();
    ev.set_wall_time(now_secs());
    ev.set_step(step as i64);
    ev.set_session_log(log);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn greyscale_non_square_image_keeps_its_shape_and_pixels() {
        let (w, h) = (5u32, 3u32);
        let pixels: Vec<u8> = (0..w * h).map(|i| (i * 17) as u8).collect();
        let ev = image(4, "conv1/input", w, h, 1, &pixels).unwrap();
        let v = &ev.get_summary().get_value()[0];
        let img = v.get_image();
        assert_eq!((img.get_width(), img.get_height()), (5, 3));
        assert_eq!(img.get_colorspace(), 1);
        let (info, data) = decode_png(img.get_encoded_image_string());
        assert_eq!((info.width, info.height), (5, 3));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(data, pixels);
    }

    #[test]
    fn rgb_image_is_interleaved_hwc() {
        let pixels: Vec<u8> = (0..2 * 4 * 3).map(|i| i as u8).collect();
        let ev = image(0, "attention/0", 2, 4, 3, &pixels).unwrap();
        let img = ev.get_summary().get_value()[0].get_image();
        let (info, data) = decode_png(img.get_encoded_image_string());
        assert_eq!(
            (info.width, info.height, info.color_type),
            (2, 4, png::ColorType::Rgb)
        );
        assert_eq!(data, pixels);
    }

    #[test]
    fn malformed_images_are_errors() {
        assert!(image(0, "t", 2, 2, 2, &[0; 8]).is_err());
        assert!(image(0, "t", 2, 2, 1, &[0; 5]).is_err());
        let err = image(0, "t", 0, 2, 1, &[]).unwrap_err();
        assert!(err.to_string().contains("image t"), "{err}");
    }

    #[test]
    fn text_is_a_string_tensor_for_the_text_plugin() {
        let ev = text(9, "samples/translations", "| a | b |\n|---|---|").unwrap();
        let v = &ev.get_summary().get_value()[0];
        assert_eq!(v.get_metadata().get_plugin_data().get_plugin_name(), "text");
        assert_eq!(v.get_tensor().get_dtype(), DataType::DT_STRING);
        assert_eq!(v.get_tensor().get_string_val()[0], b"| a | b |\n|---|---|");
        assert_eq!(ev.get_step(), 9);
    }
}
