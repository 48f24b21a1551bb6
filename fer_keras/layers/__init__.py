"""Custom Keras layers, one public class per file. Import from the module that holds the class."""
