"""noor-world-tiny: the built-in interactive world model. So far its data side: the player's actions
(`actions`), a procedural terrain map (`terrain`), captions naming its biomes in English and Arabic
(`captions`) and the eval's pixel readers (`readers`); the model, sessions and studio page come next
(docs/world.md)."""
