"""The files of one unit, named in one place: its images and what options add beside each.

A unit writes one PNG per image (mixed4a_0097.png; diversity copies and interpolation frames are
mixed4a_0097_0.png, _1, ...), and beside each image:

    --save-steps 64,128    mixed4a_0097.step64.png, mixed4a_0097.step128.png   (the image after step N)
    --alpha-map            mixed4a_0097_alpha.png                               (where the model looked)
    --cppn-upscale 2       mixed4a_0097.x2.png                                  (the image 2 times larger)

The runner names a unit's files from its images and settings (`UnitFiles.planned`); its record
(in grid.json, and in every PNG it wrote) lists them, and whatever reads a job back (resume,
`fv merge`, stale-file removal, the Python API's results, the web atlas) takes them from the
record (`UnitFiles.listed`). No torch here: `fv atlas` reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# The record fields that list the files besides the images (UnitRecord's and grid.json's).
EXTRA_FIELDS = ("step_images", "alpha_maps", "upscaled_images")


def _stem(image: str) -> str:
    return image.removesuffix(".png")


@dataclass(frozen=True)
class UnitFiles:
    images: tuple[str, ...]  # the final images, one per objective
    steps: tuple[dict, ...] = ()  # --save-steps: image by image, step by step: {step, image}
    alpha_maps: tuple[str, ...] = ()  # --alpha-map: one per image
    upscaled: tuple[dict, ...] = ()  # --cppn-upscale: one per image, {scale, image}

    @classmethod
    def planned(cls, images: Iterable[str], save_steps: tuple[int, ...] = (), alpha_map: bool = False, scale: int = 1) -> UnitFiles:
        """The files a unit with these images writes under these settings."""
        images = tuple(images)
        return cls(
            images,
            tuple({"step": step, "image": f"{_stem(name)}.step{step}.png"} for name in images for step in save_steps),
            tuple(f"{_stem(name)}_alpha.png" for name in images) if alpha_map else (),
            tuple({"scale": scale, "image": f"{_stem(name)}.x{scale}.png"} for name in images) if scale > 1 else (),
        )

    @classmethod
    def of(cls, images: Iterable[str], settings) -> UnitFiles:
        """planned() with a job's RenderSettings."""
        return cls.planned(images, settings.save_steps, settings.alpha_map, settings.cppn_upscale)

    @classmethod
    def listed(cls, record: dict) -> UnitFiles:
        """The files a unit record (grid.json's, or a PNG's) lists; no images for a failed or pending unit."""
        if record.get("images"):
            images = tuple(entry["image"] for entry in record["images"])
        else:
            images = (record["image"],) if record.get("image") else ()
        return cls(
            images,
            tuple(record.get("step_images") or ()),
            tuple(record.get("alpha_maps") or ()),
            tuple(record.get("upscaled_images") or ()),
        )

    def per_image(self, k: int) -> tuple[list[dict], str | None, str | None]:
        """Image k's step images, alpha map and upscaled image (None where the option is off)."""
        per = len(self.steps) // max(1, len(self.images))
        return (
            list(self.steps[k * per:(k + 1) * per]),
            self.alpha_maps[k] if self.alpha_maps else None,
            self.upscaled[k]["image"] if self.upscaled else None,
        )

    @property
    def extras(self) -> list[str]:
        """Every file besides the images: step images, alpha maps, upscaled images."""
        return [*(s["image"] for s in self.steps), *self.alpha_maps, *(u["image"] for u in self.upscaled)]

    @property
    def names(self) -> list[str]:
        """Every file, the extras first: the order they are written in, so that a unit whose last
        image is on disk has all its files."""
        return [*self.extras, *self.images]

    def fields(self) -> dict:
        """The record fields that list the extras (only those that are set)."""
        values = {"step_images": list(self.steps), "alpha_maps": list(self.alpha_maps), "upscaled_images": list(self.upscaled)}
        return {key: value for key, value in values.items() if value}


def listed_names(records: Iterable[dict]) -> set[str]:
    """Every file name a job's unit records list."""
    return {name for record in records for name in UnitFiles.listed(record).names}
